"""BOS-aligned best-fit packing: properties of the rows, and the torch and numpy variants."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from prepare import dataloader, shards
from prepare import encoding as E
from prepare import tokenizer as T

SEQ = 64


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> T.Tokenizer:
    d = tmp_path_factory.mktemp("tok")
    E.save(E.byte_level_encoding(), d)
    return T.Tokenizer.from_directory(d)


@pytest.fixture(scope="module")
def docs_and_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[Path]]:
    """Documents of very different lengths (1..150 bytes, some longer than a row), each unique."""
    rng = random.Random(0)
    docs = [
        f"<{i}>" + "".join(rng.choice("abcdefgh") for _ in range(rng.choice([0, 3, 10, 30, 60, 150])))
        for i in range(3000)
    ]
    d = tmp_path_factory.mktemp("data")
    files = []
    for k in range(3):
        shards.write_text_shard(d / shards.shard_name(k), docs[k * 1000 : (k + 1) * 1000])
        files.append(d / shards.shard_name(k))
    return docs, files


def rows_numpy(tok: T.Tokenizer, files: list[Path], batch: int, n_batches: int, **kw: object) -> np.ndarray:
    it = dataloader.make_dataloader_numpy(tok, batch, SEQ, "train", files=files, **kw)
    out = []
    for _ in range(n_batches):
        x, y, _ = next(it)
        assert x.shape == y.shape == (batch, SEQ) and x.dtype == np.int32
        assert (x[:, 1:] == y[:, :-1]).all()  # targets are the inputs shifted by one
        out.append(np.concatenate([x, y[:, -1:]], axis=1))
    return np.concatenate(out)


def test_rows_start_with_bos_and_hold_only_document_tokens(tok, docs_and_files) -> None:
    docs, files = docs_and_files
    rows = rows_numpy(tok, files, 8, 20)
    encoded = {tuple([tok.bos_id, *tok.encode(d)]) for d in docs}
    cropped_rows = 0
    for row in rows.tolist():
        assert row[0] == tok.bos_id
        starts = [i for i, t in enumerate(row) if t == tok.bos_id]
        segments = [row[a:b] for a, b in zip(starts, [*starts[1:], len(row)], strict=True)]
        assert sum(map(len, segments)) == SEQ + 1  # no padding: the row is documents end to end
        for k, seg in enumerate(segments):
            if tuple(seg) in encoded:
                continue
            # only the last segment of a row may be a cropped document, and it fills the row exactly
            assert k == len(segments) - 1, "a cropped document in the middle of a row"
            assert any(e[: len(seg)] == tuple(seg) for e in encoded), "a segment that is no document's prefix"
            cropped_rows += 1
    assert cropped_rows < len(rows)  # best fit: most rows are filled by whole documents


def test_whole_documents_are_preferred_over_cropping(tok, docs_and_files) -> None:
    docs, files = docs_and_files
    rows = rows_numpy(tok, files, 16, 10)
    whole = sum(1 for row in rows.tolist() for t in row if t == tok.bos_id)
    # nearly every document placed is whole: crops happen at most once per row
    assert whole >= 2 * len(rows)


def test_deterministic_and_independent_of_batch_size_and_threads(tok, docs_and_files) -> None:
    _, files = docs_and_files
    a = rows_numpy(tok, files, 4, 6)
    b = rows_numpy(tok, files, 4, 6)
    c = rows_numpy(tok, files, 3, 8, num_threads=4)
    d = rows_numpy(tok, files, 24, 1)
    assert (a == b).all() and (a == c).all() and (a == d).all()


def test_epoch_advances_when_the_data_cycles(tok, docs_and_files) -> None:
    _, files = docs_and_files
    it = dataloader.make_dataloader_numpy(tok, 16, SEQ, "train", files=files[:1], buffer_size=50)
    epochs = [next(it)[2] for _ in range(60)]
    assert epochs[0] == 1 and epochs == sorted(epochs) and epochs[-1] >= 2


def test_torch_variant_matches_numpy(tok, docs_and_files) -> None:
    _, files = docs_and_files
    it = dataloader.make_dataloader(tok, 4, SEQ, "train", device="cpu", files=files)
    nx, ny, _ = next(dataloader.make_dataloader_numpy(tok, 4, SEQ, "train", files=files))
    x, y, epoch = next(it)
    assert x.dtype == torch.long and x.shape == (4, SEQ) and x.is_contiguous() and y.is_contiguous()
    assert (x.numpy() == nx).all() and (y.numpy() == ny).all() and epoch == 1


def test_active_dataset_splits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path))
    monkeypatch.setenv("AUTORESEARCH_DATASET", "arithmetic")
    train, val = dataloader.split_files("train"), dataloader.split_files("val")
    assert val == [tmp_path / "arithmetic" / "data" / "val.parquet"] and val[0] not in train
    with pytest.raises(ValueError, match="split"):
        dataloader.split_files("test")
    tok = T.Tokenizer.load()
    x, _, _ = next(dataloader.make_dataloader(tok, 2, 32, "val", device="cpu"))
    text = tok.decode(x[0, 1:].tolist())
    assert x[0, 0].item() == tok.bos_id and "<think>" in text


def test_rows_need_room(tok, docs_and_files) -> None:
    with pytest.raises(ValueError):
        next(dataloader.make_dataloader_numpy(tok, 1, 0, "train", files=docs_and_files[1]))


def test_prefetching_changes_nothing_and_passes_errors_on(tok, docs_and_files, tmp_path: Path) -> None:
    from prepare.errors import DataError

    _, files = docs_and_files
    assert (rows_numpy(tok, files, 4, 5, prefetch=0) == rows_numpy(tok, files, 4, 5, prefetch=3)).all()
    broken = tmp_path / "shard_00000.parquet"
    broken.write_bytes(b"PAR1 not really")
    it = dataloader.make_dataloader_numpy(tok, 2, SEQ, "train", files=[broken])
    with pytest.raises(DataError, match="re-run `autoresearch prepare`"):
        next(it)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_variant_pinned_double_buffering_keeps_earlier_batches_intact(tok, docs_and_files) -> None:
    _, files = docs_and_files
    expected = rows_numpy(tok, files, 8, 6)
    it = dataloader.make_dataloader(tok, 8, SEQ, "train", device="cuda", files=files)
    got = [next(it) for _ in range(6)]  # hold every batch while later ones are copied in
    torch.cuda.synchronize()
    for k, (x, y, _) in enumerate(got):
        assert x.is_cuda and x.dtype == torch.long
        rows = expected[k * 8 : (k + 1) * 8]
        assert (x.cpu().numpy() == rows[:, :-1]).all() and (y.cpu().numpy() == rows[:, 1:]).all()


# A packer whose packing runs native C++ code (torch here; arrow and tiktoken run native code in
# the real one) for a while per batch. The script prints a summary and exits with the loader
# neither exhausted nor closed (a global), while the producer thread is inside torch.
EXIT_WHILE_PACKING = """
import itertools, sys, time
import numpy as np
import torch
from prepare.dataloader import batches

class BusyPacker:
    epoch = 1
    def rows(self, n):
        a = torch.rand(300, 300)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            a = (a @ a).clamp(-1.0, 1.0)
        return np.zeros((n, 4), dtype=np.int32)

loader = batches(BusyPacker(), itertools.repeat(1), prefetch=1)
next(loader)
time.sleep(0.1)  # the producer is packing the next batches
print("---")
print("val_bpb:          1.000000", flush=True)
"""


def test_a_run_exiting_while_the_loader_packs_exits_cleanly(tmp_path: Path) -> None:
    """The intermittent exit 134 ("terminate called without an active exception") after a
    complete summary: a daemon thread still in native code when Python finalizes. The loader's
    thread is stopped and joined at exit, so the process ends with 0."""
    import subprocess
    import sys

    project = Path(__file__).resolve().parents[2]
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", EXIT_WHILE_PACKING],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
        assert "val_bpb:          1.000000" in done.stdout
        assert "terminate called" not in done.stderr
