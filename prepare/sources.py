"""Building the real datasets: `climbmix` (downloaded shards) and `text:PATH` (local files).

Both end the same way: parquet shards in <root>/data, a BPE tokenizer trained on the
training shards only (never the validation shard) in <root>/tokenizer, and the manifest,
written last. Every step skips what is already complete, so an interrupted prepare resumes.

climbmix: training shards shard_00000..shard_{N-1}, validation pinned to shard_06542 (the
last shard of the public dataset, never trained on).

text:PATH: a file or a folder (searched recursively, in sorted order) of .txt, .md, .jsonl
(one JSON object per line with a "text" field) and .parquet (a "text" column) files.
Plain-text files are cut into documents at blank lines, at most DOC_CHARS characters each.
A document goes to validation iff a hash of its text says so (VAL_PERCENT), so the split is
pinned: the same text always lands on the same side, whatever else is in the folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prepare import cache, download, encoding, shards
from prepare.atomic import atomic_write
from prepare.errors import DataError

CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_VAL_SHARD = 6542  # the last shard of the dataset: pinned validation, never trained on
TEXT_SUFFIXES = (".txt", ".md", ".jsonl", ".parquet")
DOC_CHARS = 8000
VAL_PERCENT = 2
DOCS_PER_SHARD = 50_000
TRAINED_ON = "trained_on.json"


def prepare_remote_or_text(
    spec: str,
    cache_root: Path,
    *,
    num_shards: int,
    base_url: str | None,
    workers: int,
    max_chars: int,
    progress: bool,
) -> cache.DatasetInfo:
    spec = cache.normalize_spec(spec)
    root = cache.dataset_root(spec, cache_root)
    data = root / "data"
    if spec == "climbmix":
        if not 1 <= num_shards <= CLIMBMIX_VAL_SHARD:
            raise DataError(f"--num-shards must be between 1 and {CLIMBMIX_VAL_SHARD} (got {num_shards})")
        url = base_url or CLIMBMIX_URL
        train, val = download.shard_names(num_shards, CLIMBMIX_VAL_SHARD)
        print(f"climbmix: {num_shards} training shards + validation {val} from {url} into {data}")
        report = download.download(url, [*train, val], data, workers=workers, progress=progress)
        print(
            f"climbmix: {len(report.downloaded)} downloaded ({report.bytes / 1e6:.1f} MB), "
            f"{len(report.skipped)} already complete, {len(report.repaired)} repaired"
        )
        source: dict[str, Any] = {"base_url": url, "num_shards": num_shards}
    else:
        train, val, source = build_text(Path(spec[5:]), data)
    tok_dir = root / "tokenizer"
    key = "climbmix" if spec == "climbmix" else str(source["fingerprint"])
    ensure_tokenizer([data / n for n in train], tok_dir, cache.expected_vocab_size(), max_chars, key)
    manifest = cache.new_manifest(spec, source, data, train, val, tok_dir, "bpe")
    cache.write_manifest(root, manifest)
    info = cache.check_ready(spec, cache_root)
    print(
        f"{spec}: ready in {root} (tokenizer {manifest['tokenizer']['sha256'][:12]}, vocab {manifest['tokenizer']['vocab_size']})"
    )
    return info


def ensure_tokenizer(
    train_files: list[Path], tok_dir: Path, vocab_size: int, max_chars: int, source_key: str
) -> None:
    """Train the tokenizer unless one trained the same way on (a prefix of) these shards is there."""
    names = [p.name for p in train_files]
    record = tok_dir / TRAINED_ON
    if record.is_file() and (tok_dir / encoding.TOKENIZER_FILE).is_file():
        try:
            prev = json.loads(record.read_text())
            same_kind = (prev["vocab_size"], prev["source"]) == (vocab_size, source_key)
            # the same input text: the cap cut the same prefix of the same shards, or nothing was cut either time
            capped_same = (
                prev["exhausted_cap"]
                and prev["max_chars"] == max_chars
                and names[: len(prev["train"])] == prev["train"]
            )
            whole_same = not prev["exhausted_cap"] and prev["train"] == names and max_chars > prev["chars"]
            if same_kind and (capped_same or whole_same):
                return
        except (ValueError, KeyError, TypeError):
            pass
    used: list[str] = []
    chars = 0

    def texts() -> Iterator[str]:
        nonlocal chars
        for path in train_files:
            used.append(path.name)
            for batch in shards.iter_text_batches([path]):
                for t in batch:
                    chars += min(len(t), encoding.DOC_CHAR_CAP)
                    yield t

    print(
        f"tokenizer: training a {vocab_size}-id BPE on up to {max_chars:,} characters of {len(train_files)} shard(s)"
    )
    sha, seconds = encoding.train_and_save(texts(), vocab_size, tok_dir, max_chars=max_chars)
    exhausted = chars >= max_chars
    payload = {
        "vocab_size": vocab_size,
        "max_chars": max_chars,
        "source": source_key,
        "train": used,
        "exhausted_cap": exhausted,
        "chars": chars,
        "seconds": round(seconds, 2),
        "sha256": sha,
    }
    atomic_write(record, json.dumps(payload, indent=2).encode())
    print(f"tokenizer: trained on {chars:,} characters in {seconds:.1f}s")


def _is_val(text: str) -> bool:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 100 < VAL_PERCENT


def source_files(path: Path) -> list[Path]:
    if not path.exists():
        raise DataError(
            f"text dataset path {path} does not exist; pass an existing file or folder: --dataset text:PATH"
        )
    if path.is_file():
        files = [path] if path.suffix.lower() in TEXT_SUFFIXES else []
    else:
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in TEXT_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    if not files:
        raise DataError(
            f"no {', '.join(TEXT_SUFFIXES)} files in {path}; put text there or point --dataset text: elsewhere"
        )
    return files


def _chunks(text: str) -> Iterator[str]:
    """Cut a plain-text file into documents at blank lines, each at most DOC_CHARS characters."""
    buf: list[str] = []
    size = 0
    for para in text.split("\n\n"):
        if size and size + len(para) + 2 > DOC_CHARS:
            yield "\n\n".join(buf)
            buf, size = [], 0
        while len(para) > DOC_CHARS:  # one huge paragraph: hard cuts
            yield para[:DOC_CHARS]
            para = para[DOC_CHARS:]
        buf.append(para)
        size += len(para) + 2
    if buf and "".join(buf).strip():
        yield "\n\n".join(buf)


def iter_documents(files: list[Path]) -> Iterator[str]:
    for f in files:
        suffix = f.suffix.lower()
        if suffix == ".parquet":
            try:
                yield from (t for batch in shards.iter_text_batches([f]) for t in batch)
            except DataError as exc:
                raise DataError(f"{f} is not a parquet file with a `text` column ({exc})") from exc
        elif suffix == ".jsonl":
            for lineno, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise DataError(
                        f'{f}:{lineno}: expected a JSON object with a "text" field ({exc!r})'
                    ) from exc
                if isinstance(text, str) and text:
                    yield text
        else:
            yield from (c for c in _chunks(f.read_text(encoding="utf-8", errors="replace")) if c.strip())


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def build_text(path: Path, data: Path) -> tuple[list[str], str, dict[str, Any]]:
    """Write the text source's shards (unless the same files were already written); returns (train, val, source)."""
    files = source_files(path)
    fingerprint = _fingerprint(files)
    stamp = data / ".source.json"
    if stamp.is_file():
        try:
            prev = json.loads(stamp.read_text())
            if prev["fingerprint"] == fingerprint and all(
                (data / n).is_file() for n in [*prev["train"], prev["val"]]
            ):
                return prev["train"], prev["val"], prev["source"]
        except (ValueError, KeyError, TypeError):
            pass
    train_docs: list[str] = []
    val_docs: list[str] = []
    for doc in iter_documents(files):
        (val_docs if _is_val(doc) else train_docs).append(doc)
    if not val_docs and len(train_docs) > 1:  # tiny corpus: pin the document with the smallest hash instead
        key = min(
            range(len(train_docs)),
            key=lambda i: hashlib.blake2b(train_docs[i].encode(), digest_size=8).digest(),
        )
        val_docs.append(train_docs.pop(key))
    if not train_docs or not val_docs:
        raise DataError(
            f"{path} holds too little text ({len(train_docs) + len(val_docs)} document(s)); "
            "a text dataset needs at least two documents"
        )
    for old in data.glob("*.parquet") if data.exists() else []:
        old.unlink()
    train: list[str] = []
    for i in range(0, len(train_docs), DOCS_PER_SHARD):
        name = shards.shard_name(len(train))
        shards.write_text_shard(data / name, train_docs[i : i + DOCS_PER_SHARD])
        train.append(name)
    shards.write_text_shard(data / "val.parquet", val_docs)
    source = {
        "path": str(path),
        "files": len(files),
        "fingerprint": fingerprint,
        "train_docs": len(train_docs),
        "val_docs": len(val_docs),
    }
    atomic_write(
        stamp,
        json.dumps(
            {"fingerprint": fingerprint, "train": train, "val": "val.parquet", "source": source}
        ).encode(),
    )
    return train, "val.parquet", source
