"""BOS-aligned best-fit packing of documents into fixed-length rows, for torch and numpy/MLX.

Every document is tokenized with BOS in front. Each row holds exactly seq_len+1 tokens (the
inputs are row[:-1], the targets row[1:]) and no padding: from a buffer of about
`buffer_size` documents the packer repeatedly takes the largest document that fits in the
space left (the oldest among equal lengths); only when none fits does it crop the shortest
one to fill the row exactly (the cropped remainder is dropped). So every row starts with BOS
and most documents are seen whole.

The stream of rows depends only on the data, the tokenizer, seq_len and buffer_size, never on
the batch size, the thread count or the machine: the same split gives the same rows
everywhere, which is what makes evaluate_bpb comparable across experiments.

The lengths of buffered documents sit in a sorted list, so "largest that fits" is a bisect,
not a scan of the buffer. Tokenization runs in tiktoken's threads when num_threads > 1.
"""

from __future__ import annotations

import bisect
import itertools
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prepare import markers, shards
from prepare.tokenizer import Tokenizer

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "val")
DEFAULT_BUFFER = 1000
DEFAULT_PREFETCH = 2  # batches packed ahead in a background thread


def split_files(split: str) -> list[Path]:
    """The active dataset's shards for `split` (the validation split is one pinned shard)."""
    from prepare import datasets, env

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    info = datasets.ensure_ready(env.dataset_spec(), env.cache_root(), need_val=split == "val")
    return list(info.train_files) if split == "train" else [info.val_file]


def default_threads() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _documents(
    tokenizer: Tokenizer, files: Sequence[Path], num_threads: int
) -> Iterator[tuple[list[list[int]], int]]:
    """Tokenized documents (BOS first), a row group at a time, cycling forever; yields (docs, epoch)."""
    for epoch in itertools.count(1):
        produced = False
        for texts in shards.iter_text_batches(files):
            if texts:
                produced = True
                yield tokenizer.encode_batch(texts, prepend=tokenizer.bos_id, num_threads=num_threads), epoch
        if not produced:
            raise ValueError(f"no documents in {', '.join(map(str, files))}")


class Packer:
    """Fills rows of `row_len` tokens from a document stream by best-fit packing."""

    def __init__(
        self, docs: Iterator[tuple[list[list[int]], int]], row_len: int, buffer_size: int = DEFAULT_BUFFER
    ) -> None:
        if row_len < 2:
            raise ValueError("rows need at least 2 tokens (seq_len >= 1)")
        self._docs = docs
        self.row_len = row_len
        self.buffer_size = buffer_size
        self.epoch = 1
        self._keys: list[tuple[int, int]] = []  # (length, -serial), sorted
        self._store: dict[int, np.ndarray] = {}
        self._serial = 0

    def _refill(self) -> None:
        batch, self.epoch = next(self._docs)
        lengths = [len(d) for d in batch]
        flat = np.fromiter(itertools.chain.from_iterable(batch), dtype=np.int32, count=sum(lengths))
        start = 0
        for n in lengths:
            self._serial += 1
            self._store[self._serial] = flat[start : start + n]
            bisect.insort(self._keys, (n, -self._serial))
            start += n

    def fill(self, row: np.ndarray) -> None:
        """Write one packed row into `row` (length row_len)."""
        pos, cap, keys = 0, self.row_len, self._keys
        while pos < cap:
            while len(keys) < self.buffer_size:
                self._refill()
            remaining = cap - pos
            i = bisect.bisect_right(keys, (remaining, 0)) - 1  # largest length <= remaining, oldest first
            if i >= 0:
                n, neg = keys.pop(i)
                row[pos : pos + n] = self._store.pop(-neg)
                pos += n
            else:  # nothing fits: crop the shortest document to fill the row exactly
                _, neg = keys.pop(0)
                row[pos:cap] = self._store.pop(-neg)[:remaining]
                pos = cap

    def rows(self, count: int) -> np.ndarray:
        out = np.empty((count, self.row_len), dtype=np.int32)
        for r in range(count):
            self.fill(out[r])
        return out


class _Prefetcher:
    """Packs the next batches in a background thread while the caller trains on this one.

    tiktoken releases the GIL while it encodes, so tokenization (most of the loader's cost)
    overlaps the training step's Python instead of adding to it. One producer, a FIFO queue:
    the order of rows is exactly the packer's. An exception in the producer is re-raised in the
    consumer; the thread is a daemon and stops when the iterator is closed or garbage-collected.
    """

    _DONE = object()

    def __init__(self, packer: Packer, sizes: Iterable[int], depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(packer, sizes), daemon=True, name="prepare-dataloader"
        )
        self._thread.start()

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self, packer: Packer, sizes: Iterable[int]) -> None:
        try:
            for n in sizes:
                if self._stop.is_set():
                    return
                self._put((packer.rows(n), packer.epoch))
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        try:
            while True:
                item = self._queue.get()
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop.set()


def batches(
    packer: Packer, sizes: Iterable[int], prefetch: int = DEFAULT_PREFETCH
) -> Iterator[tuple[np.ndarray, int]]:
    """(rows, epoch) for each batch size in `sizes`, packed ahead in a thread when prefetch > 0."""
    if prefetch <= 0:
        return ((packer.rows(n), packer.epoch) for n in sizes)
    return iter(_Prefetcher(packer, sizes, prefetch))


def make_packer(
    tokenizer: Tokenizer,
    seq_len: int,
    split: str,
    *,
    files: Sequence[Path] | None = None,
    buffer_size: int = DEFAULT_BUFFER,
    num_threads: int | None = None,
) -> Packer:
    paths = list(files) if files is not None else split_files(split)
    threads = default_threads() if num_threads is None else num_threads
    return Packer(_documents(tokenizer, paths, threads), seq_len + 1, buffer_size)


def make_dataloader_numpy(
    tokenizer: Tokenizer,
    batch_size: int,
    seq_len: int,
    split: str,
    *,
    files: Sequence[Path] | None = None,
    buffer_size: int = DEFAULT_BUFFER,
    num_threads: int | None = None,
    prefetch: int = DEFAULT_PREFETCH,
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yields (inputs, targets, epoch): two contiguous int32 arrays of shape (batch_size, seq_len)."""
    packer = make_packer(
        tokenizer, seq_len, split, files=files, buffer_size=buffer_size, num_threads=num_threads
    )
    for rows, epoch in batches(packer, itertools.repeat(batch_size), prefetch):
        if split == "train":
            markers.served(batch_size * seq_len)
        yield np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:]), epoch


def make_dataloader(
    tokenizer: Tokenizer,
    batch_size: int,
    seq_len: int,
    split: str,
    *,
    device: Any = None,
    files: Sequence[Path] | None = None,
    buffer_size: int = DEFAULT_BUFFER,
    num_threads: int | None = None,
    prefetch: int = DEFAULT_PREFETCH,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Yields (inputs, targets, epoch): int64 tensors of shape (batch_size, seq_len) on the device.

    On CUDA the rows go through two alternating pinned host buffers and a non-blocking copy,
    so the copy overlaps the GPU's work; a CUDA event guards each host buffer, so it is never
    overwritten while its copy may still be in flight. Packing itself runs ahead in a thread.
    """
    import torch

    from prepare import env

    dev = torch.device(device if device is not None else ("cuda" if env.device() == "cuda" else "cpu"))
    packer = make_packer(
        tokenizer, seq_len, split, files=files, buffer_size=buffer_size, num_threads=num_threads
    )
    bt = batch_size * seq_len
    batches_ = batches(packer, itertools.repeat(batch_size), prefetch)
    if dev.type != "cuda":
        for rows_np, epoch in batches_:
            rows = torch.from_numpy(rows_np).long()
            if split == "train":
                markers.served(bt)
            yield rows[:, :-1].contiguous().to(dev), rows[:, 1:].contiguous().to(dev), epoch
    hosts = [torch.empty(2 * bt, dtype=torch.long, pin_memory=True) for _ in range(2)]
    events: list[Any] = [None, None]
    for k, (rows_np, epoch) in enumerate(batches_):
        slot = k % 2
        if events[slot] is not None:
            events[slot].synchronize()
        rows = torch.from_numpy(rows_np)
        host = hosts[slot]
        host[:bt].view(batch_size, seq_len).copy_(rows[:, :-1])
        host[bt:].view(batch_size, seq_len).copy_(rows[:, 1:])
        gpu = host.to(dev, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        events[slot] = event
        if split == "train":
            markers.served(bt)
        yield gpu[:bt].view(batch_size, seq_len), gpu[bt:].view(batch_size, seq_len), epoch
