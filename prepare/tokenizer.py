"""The Tokenizer train files hold: encode, decode, the BOS id and the byte length of every token.

    from prepare import Tokenizer
    tok = Tokenizer.load()                      # the active dataset's (AUTORESEARCH_DATASET)
    tok = Tokenizer.from_directory(path)        # any tokenizer folder

The files behind it, and how they are trained and written, are `prepare.encoding`'s.
`token_bytes[i]` is the exact number of UTF-8 bytes token i stands for (special tokens 0), so
for any text without special tokens
    sum(tok.token_bytes[t] for t in tok.encode(text)) == len(text.encode("utf-8"))
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import tiktoken

from prepare import datasets, encoding, env


class Tokenizer:
    """A loaded tokenizer: encode/decode, the BOS id, the vocabulary size and `token_bytes`."""

    def __init__(self, enc: tiktoken.Encoding, token_bytes: Sequence[int], sha256: str = "") -> None:
        encoding.check_token_bytes(enc, token_bytes)
        self.enc = enc
        self.token_bytes: list[int] = list(token_bytes)
        self.sha256 = sha256
        self.bos_id: int = enc.encode_single_token(encoding.BOS_TOKEN)
        self.vocab_size: int = enc.n_vocab
        self.special_ids: frozenset[int] = frozenset(
            enc.encode_single_token(s) for s in encoding.SPECIAL_TOKENS
        )

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> Tokenizer:
        return cls(*encoding.read(path))

    @classmethod
    def load(cls) -> Tokenizer:
        """The active dataset's tokenizer (AUTORESEARCH_DATASET / AUTORESEARCH_CACHE)."""
        info = datasets.ensure_ready(env.dataset_spec(), env.cache_root(), need_val=False)
        return cls.from_directory(info.tokenizer_dir)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token strings in it are encoded as ordinary text."""
        return self.enc.encode_ordinary(text)

    def encode_batch(
        self, texts: Sequence[str], *, prepend: int | None = None, num_threads: int = 1
    ) -> list[list[int]]:
        """Encode many documents, optionally each prefixed with one id (the BOS)."""
        if num_threads > 1:
            out = self.enc.encode_ordinary_batch(list(texts), num_threads=num_threads)
        else:
            encode = self.enc.encode_ordinary
            out = [encode(t) for t in texts]
        if prepend is not None:
            for ids in out:
                ids.insert(0, prepend)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return self.enc.decode(list(ids))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, sha256={self.sha256[:12]})"
