"""The tokenizer: training with rustbpe, saving/loading, and the exact byte invariant."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from prepare import encoding as E
from prepare import tokenizer as T
from prepare.errors import DataError

# Scripts whose UTF-8 is 1-4 bytes long, combining marks, emoji with skin tones and ZWJ sequences.
ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .,;!?'\"()[]{}\n\t",
    "éàüßøçñ",
    "\u0301\u0308\u0327\u20dd\u0345",  # combining marks
    "你好世界中文字符测试漢字",
    "こんにちはカタカナ",
    "한국어텍스트",
    "Ελληνικά кириллица עברית العربية हिन्दी",
    "😀👋🏽👩\u200d💻🇫🇷🧪🦀✨\ufe0f",
    "\U0001d11e\U00010348\U0001f9ec",
]


def random_text(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        alphabet = rng.choice(ALPHABETS)
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))))
        out.append(rng.choice([" ", "", "\n", "  "]))
    return "".join(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> T.Tokenizer:
    """A 1024-id BPE trained on mixed-script text, so some merges are partial UTF-8 sequences."""
    rng = random.Random(7)
    docs = [random_text(rng, 400) for _ in range(300)]
    directory = tmp_path_factory.mktemp("tok")
    E.train_and_save(docs, 1024, directory)
    return T.Tokenizer.from_directory(directory)


def test_vocab_size_includes_specials_and_bos(trained: T.Tokenizer) -> None:
    assert trained.vocab_size == 1024
    assert trained.bos_id == trained.enc.encode_single_token("<|bos|>")
    assert len(trained.token_bytes) == 1024
    assert [trained.token_bytes[i] for i in sorted(trained.special_ids)] == [0] * len(E.SPECIAL_TOKENS)
    assert all(b > 0 for i, b in enumerate(trained.token_bytes) if i not in trained.special_ids)


def test_partial_utf8_tokens_count_their_real_bytes(trained: T.Tokenizer) -> None:
    partial = []
    for i in range(trained.vocab_size):
        if i in trained.special_ids:
            continue
        raw = trained.enc.decode_single_token_bytes(i)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            partial.append((i, raw))
    assert partial, "the training text should have produced tokens that are partial UTF-8 sequences"
    for i, raw in partial:
        assert trained.token_bytes[i] == len(raw)
        # the naive count (decode to text, re-encode) sees U+FFFD and gets it wrong for most of them
    assert any(len(trained.decode([i]).encode()) != len(raw) for i, raw in partial)


@pytest.mark.parametrize("seed", range(40))
def test_byte_invariant_on_random_unicode(trained: T.Tokenizer, seed: int) -> None:
    rng = random.Random(1000 + seed)
    text = random_text(rng, rng.randint(1, 300))
    ids = trained.encode(text)
    assert sum(trained.token_bytes[t] for t in ids) == len(text.encode("utf-8"))
    assert trained.decode(ids) == text


def test_byte_invariant_with_arbitrary_code_points(trained: T.Tokenizer) -> None:
    rng = random.Random(3)
    for _ in range(50):
        # any scalar value except surrogates (not encodable in UTF-8)
        cps = [
            rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])
            for _ in range(rng.randint(1, 200))
        ]
        text = "".join(map(chr, cps))
        ids = trained.encode(text)
        assert sum(trained.token_bytes[t] for t in ids) == len(text.encode("utf-8"))


def test_special_token_text_is_encoded_as_ordinary_text(trained: T.Tokenizer) -> None:
    ids = trained.encode("x <|bos|> y")
    assert trained.bos_id not in ids
    assert sum(trained.token_bytes[t] for t in ids) == len("x <|bos|> y")


def test_byte_level_tokenizer_is_one_token_per_byte(tmp_path: Path) -> None:
    E.save(E.byte_level_encoding(), tmp_path)
    tok = T.Tokenizer.from_directory(tmp_path)
    text = "658+189=<think>8+9=17</think>847 é👋"
    assert tok.encode(text) == list(text.encode())
    assert tok.vocab_size == 256 + len(E.SPECIAL_TOKENS)
    assert tok.encode_batch(["ab", "c"], prepend=tok.bos_id) == [[tok.bos_id, 97, 98], [tok.bos_id, 99]]


def test_training_is_deterministic(tmp_path: Path) -> None:
    rng = random.Random(11)
    docs = [random_text(rng, 200) for _ in range(100)]
    a, _ = E.train_and_save(docs, 600, tmp_path / "a")
    b, _ = E.train_and_save(docs, 600, tmp_path / "b")
    assert a == b


def test_char_cap_limits_training_text(tmp_path: Path) -> None:
    seen = []

    def docs():
        rng = random.Random(5)
        for i in range(10_000):
            seen.append(i)
            yield random_text(rng, 50)

    E.train_and_save(docs(), 300, tmp_path, max_chars=5_000)
    assert len(seen) < 100  # stopped pulling documents soon after 5,000 characters


def test_too_little_text_for_the_vocabulary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ran out of merges.*VOCAB_SIZE=8192"):
        E.train_and_save(["aaaa bbbb"] * 10, 8192, tmp_path)


def test_missing_or_broken_tokenizer_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="autoresearch prepare"):
        T.Tokenizer.from_directory(tmp_path)
    E.save(E.byte_level_encoding(), tmp_path)
    (tmp_path / E.TOKENIZER_FILE).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="unreadable.*autoresearch prepare"):
        T.Tokenizer.from_directory(tmp_path)
