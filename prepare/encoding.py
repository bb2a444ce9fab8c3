"""Tokenizer files: a tiktoken Encoding on disk plus the exact byte length of every token.

Two kinds live in the cache, both saved the same way (`tokenizer.pkl`, a pickled
`tiktoken.Encoding`, and `token_bytes.json`):

- trained: byte-level BPE learned with `rustbpe` on the training split (GPT-4-style split
  pattern), VOCAB_SIZE ids in total including SPECIAL_TOKENS (BOS first);
- byte-level: the 256 single bytes plus SPECIAL_TOKENS, no merges (the `arithmetic`
  dataset, where splitting numbers into multi-digit tokens would hide the carries).

`token_bytes[i]` is the number of UTF-8 bytes token i stands for, taken from the token's raw
bytes (`decode_single_token_bytes`), never from decoding it to text: a token that is a
partial UTF-8 sequence decodes to U+FFFD (3 bytes) and would make bits-per-byte read low.
Special tokens count 0. Invariant, for any text without special tokens:
    sum(token_bytes[t] for t in enc.encode_ordinary(text)) == len(text.encode("utf-8"))

This module builds, writes and reads the files; `prepare.tokenizer.Tokenizer` is what train
files hold. The dataset cache (`prepare.cache`) uses only this module, so it never needs the
Tokenizer class, which in turn finds the active dataset through the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import tiktoken

from prepare.atomic import atomic_write
from prepare.errors import DataError

# GPT-4's split pattern with numbers split into 1-2 digit groups (not 1-3): better use of a small vocabulary.
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
BOS_TOKEN = "<|bos|>"
SPECIAL_TOKENS = (BOS_TOKEN, "<|eos|>", "<|reserved_0|>", "<|reserved_1|>")
TOKENIZER_FILE = "tokenizer.pkl"
TOKEN_BYTES_FILE = "token_bytes.json"
DEFAULT_MAX_CHARS = 1_000_000_000
DOC_CHAR_CAP = 10_000  # per document while training: one giant file must not dominate the merge statistics


def check_token_bytes(enc: tiktoken.Encoding, token_bytes: Sequence[int]) -> None:
    """DataError unless there is one byte length per id."""
    if len(token_bytes) != enc.n_vocab:
        raise DataError(
            f"token_bytes has {len(token_bytes)} entries but the tokenizer has {enc.n_vocab} ids; "
            "the tokenizer files are inconsistent: re-run `autoresearch prepare`"
        )


def compute_token_bytes(enc: tiktoken.Encoding) -> list[int]:
    """The true UTF-8 byte length of every id (0 for special tokens)."""
    special = {enc.encode_single_token(s) for s in enc.special_tokens_set}
    return [0 if i in special else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)]


def _with_specials(name: str, pattern: str, ranks: dict[bytes, int]) -> tiktoken.Encoding:
    offset = len(ranks)
    return tiktoken.Encoding(
        name=name,
        pat_str=pattern,
        mergeable_ranks=ranks,
        special_tokens={s: offset + i for i, s in enumerate(SPECIAL_TOKENS)},
    )


def byte_level_encoding() -> tiktoken.Encoding:
    """256 single-byte tokens + SPECIAL_TOKENS: every byte is one token."""
    return _with_specials("autoresearch-bytes", SPLIT_PATTERN, {bytes([b]): b for b in range(256)})


def train_bpe(
    texts: Iterable[str], vocab_size: int, *, max_chars: int = DEFAULT_MAX_CHARS
) -> tiktoken.Encoding:
    """Learn a byte-level BPE of `vocab_size` ids in total (specials included) with rustbpe."""
    import rustbpe

    n_ordinary = vocab_size - len(SPECIAL_TOKENS)
    if n_ordinary < 256:
        raise DataError(
            f"VOCAB_SIZE={vocab_size} is too small: a byte-level BPE needs at least {256 + len(SPECIAL_TOKENS)}"
        )

    def capped() -> Iterator[str]:
        seen = 0
        for text in texts:
            doc = text[:DOC_CHAR_CAP]
            if not doc:
                continue
            yield doc
            seen += len(doc)
            if seen >= max_chars:
                return

    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(capped(), n_ordinary, pattern=SPLIT_PATTERN)
    ranks = {bytes(k): v for k, v in trainer.get_mergeable_ranks()}
    if len(ranks) != n_ordinary:
        raise DataError(
            f"the training text ran out of merges at {len(ranks) + len(SPECIAL_TOKENS)} tokens, short of "
            f"VOCAB_SIZE={vocab_size}: add more (or more varied) training text, or raise --max-chars"
        )
    return _with_specials("autoresearch-bpe", trainer.get_pattern(), ranks)


def save(enc: tiktoken.Encoding, directory: Path) -> str:
    """Write the tokenizer atomically into `directory` (created); returns the sha256 of tokenizer.pkl."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = pickle.dumps(enc)
    atomic_write(directory / TOKEN_BYTES_FILE, json.dumps(compute_token_bytes(enc)).encode())
    atomic_write(directory / TOKENIZER_FILE, raw)
    return hashlib.sha256(raw).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_and_save(
    texts: Iterable[str], vocab_size: int, directory: Path, *, max_chars: int = DEFAULT_MAX_CHARS
) -> tuple[str, float]:
    """Train, save and self-check a tokenizer; returns (sha256, seconds spent training)."""
    t0 = time.perf_counter()
    enc = train_bpe(texts, vocab_size, max_chars=max_chars)
    seconds = time.perf_counter() - t0
    sample = "Hello world! Numbers: 12345. Unicode: 你好 👋🏽 e\u0301"
    if enc.decode(enc.encode_ordinary(sample)) != sample:
        raise DataError(
            "the trained tokenizer does not round-trip text; this is a bug in prepare, please report it"
        )
    return save(enc, directory), seconds


def read(directory: str | os.PathLike[str]) -> tuple[tiktoken.Encoding, list[int], str]:
    """(encoding, token_bytes, sha256 of tokenizer.pkl) from a tokenizer folder, or DataError."""
    directory = Path(directory)
    pkl, tb = directory / TOKENIZER_FILE, directory / TOKEN_BYTES_FILE
    if not pkl.is_file() or not tb.is_file():
        raise DataError(
            f"no tokenizer in {directory} (expected {TOKENIZER_FILE} and {TOKEN_BYTES_FILE}); "
            "run `autoresearch prepare` for this dataset"
        )
    raw = pkl.read_bytes()
    try:
        enc = pickle.loads(raw)
        token_bytes = json.loads(tb.read_text())
    except Exception as exc:  # a truncated or foreign file: say so, do not crash with a pickle trace
        raise DataError(
            f"the tokenizer in {directory} is unreadable ({exc}); delete that folder and "
            "re-run `autoresearch prepare`"
        ) from exc
    if not isinstance(enc, tiktoken.Encoding):
        raise DataError(f"{pkl} is not a tiktoken Encoding; delete it and re-run `autoresearch prepare`")
    check_token_bytes(enc, token_bytes)
    return enc, list(token_bytes), hashlib.sha256(raw).hexdigest()
