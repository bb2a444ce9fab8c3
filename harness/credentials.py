"""Which environment variables hold credentials, and their redaction in everything the harness writes.

API keys must never reach logs, results, commits, prompts or the experiment. Two mechanisms:
the experiment's environment is an allow-list (harness.integrity.environment: a secret is never
even offered to a run), and every text the harness writes or sends (prompts, the live view, run
logs, TSV fields, commit messages, the journal) goes through `redact`, which replaces every
secret the harness knows, in the encodings a key takes when someone tries to smuggle it out:
raw, reversed, hex (lower and upper case), percent-encoded, and base64 (standard and URL-safe, at
each of the three byte alignments, so the key is found inside a longer encoded string too).

A secret is, generously (not PATH, HOME and the other plain settings of `NEVER_SECRET`):
* a variable whose name has a credential word in it (KEY, TOKEN, SECRET, PASSWORD, PASSWD, PASS,
  PAT, CREDENTIAL(S), AUTH, COOKIE, SESSION, WEBHOOK, DSN, PRIVATE, SIGNATURE; as a part
  between underscores, or SECRET/PASSWORD/PASSWD/TOKEN/APIKEY anywhere: GITHUB_PAT, GHTOKEN,
  AWS_ACCESS_KEY_ID, SLACK_WEBHOOK_URL), or that starts with ANTHROPIC_ or OPENAI_;
* a variable whose value is a URL with a user or password in it (DATABASE_URL,
  PIP_INDEX_URL=https://user:pw@host/simple), or looks like a known key format (sk-..., ghp_...,
  github_pat_..., AKIA..., xox?-...), whatever its name.
The provider's base URL and model name (ANTHROPIC_BASE_URL, OPENAI_MODEL) are kept out of the
experiment but not redacted: they are not secret and the prompt may mention them.

This module imports nothing from the harness, so every layer may use it.
"""

from __future__ import annotations

import base64
import functools
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote, urlsplit

REDACTED = "[redacted]"
#: turned off only by the planted-cheat tests (the cheat must be shown to win without it)
REDACT = True
#: shorter strings are not redacted: replacing every "1234" in a log would destroy it
MIN_REDACT = 8
_WORDS = frozenset(
    {"KEY", "KEYS", "APIKEY", "TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS",
     "PASSPHRASE", "PAT", "CREDENTIAL", "CREDENTIALS", "CREDS", "AUTH", "AUTHORIZATION", "COOKIE",
     "SESSION", "WEBHOOK", "DSN", "PRIVATE", "SIGNATURE", "SIGNING"}
)  # fmt: skip
_ANYWHERE = ("SECRET", "PASSWORD", "PASSWD", "TOKEN", "APIKEY", "API_KEY", "CREDENTIAL", "WEBHOOK")
_PREFIXES = ("ANTHROPIC_", "OPENAI_")
_NOT_REDACTED_SUFFIXES = ("_BASE_URL", "_MODEL")
#: plain settings that are never secrets, whatever their value
NEVER_SECRET = frozenset(
    {"PATH", "HOME", "PWD", "OLDPWD", "SHELL", "TERM", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ",
     "PYTHONPATH", "LD_LIBRARY_PATH", "TMPDIR", "HOSTNAME", "SHLVL", "_"}
)  # fmt: skip
_KEY_SHAPES = re.compile(
    r"^(sk-[A-Za-z0-9_\-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|AKIA[0-9A-Z]{16}"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}|hf_[A-Za-z0-9]{20,}|glpat-[A-Za-z0-9_\-]{20,})$"
)


def is_secret(name: str, value: str = "") -> bool:
    """True for a variable that may hold a credential (by its name, or by its value when given)."""
    upper = name.upper()
    if upper in NEVER_SECRET or upper.startswith("LC_"):
        return False
    parts = set(re.split(r"[^A-Z0-9]+", upper))
    if parts & _WORDS or upper.startswith(_PREFIXES) or any(w in upper for w in _ANYWHERE):
        return True
    return bool(value) and (_has_userinfo(value) or bool(_KEY_SHAPES.match(value.strip())))


def _has_userinfo(value: str) -> bool:
    if "://" not in value or "@" not in value:
        return False
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return False
    return bool(parts.username or parts.password)


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The strings of `env` that must be redacted: secret values, and the user:password part of URLs."""
    out: set[str] = set()
    for name, value in env.items():
        if not value or not is_secret(name, value):
            continue
        if _has_userinfo(value):
            parts = urlsplit(value.strip())
            out.update(p for p in (parts.password, parts.username) if p)
            out.update(unquote(p) for p in (parts.password, parts.username) if p)
            out.add(value.strip())
        elif not name.upper().endswith(_NOT_REDACTED_SUFFIXES):
            out.add(value)
    return sorted(s for s in out if len(s) >= MIN_REDACT)


def encodings(secret: str) -> set[str]:
    """The forms `secret` takes when encoded: raw, reversed, hex, percent-encoded, base64 (std and
    URL-safe, each at the three byte alignments of a longer encoded string)."""
    raw = secret.encode("utf-8")
    forms = {secret, secret[::-1], raw.hex(), raw.hex().upper(), quote(secret, safe="")}
    n = len(raw)
    for k in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * k + raw).decode("ascii")
            start = (8 * k + 5) // 6  # the first character that depends on the secret alone
            end = (8 * (k + n)) // 6  # the last whole character it determines
            forms.add(text[start:end])
    return {f for f in forms if len(f) >= MIN_REDACT}


class Redactor:
    """Replaces every encoding of a fixed set of secrets by [redacted]; longest match first."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for s in secrets:
            forms |= encodings(s)
        self._pattern = (
            re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
            if forms
            else None
        )

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(REDACTED, text)

    def __bool__(self) -> bool:
        return self._pattern is not None


@functools.lru_cache(maxsize=8)
def _redactor(secrets: tuple[str, ...]) -> Redactor:
    return Redactor(secrets)


def redactor(env: Mapping[str, str] | None = None) -> Redactor:
    """The redactor for the secrets of `env` (default: the harness's own environment, as it is now)."""
    if not REDACT:
        return _redactor(())
    return _redactor_of(tuple((os.environ if env is None else env).items()))


@functools.lru_cache(maxsize=8)
def _redactor_of(env: tuple[tuple[str, str], ...]) -> Redactor:
    # every TSV cell and prompt is redacted: finding the secrets of an environment once, not per
    # call, is what keeps a 1,000-experiment night from spending minutes here
    return _redactor(tuple(secret_values(dict(env))))


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with every secret of `env` (default os.environ), in every encoding, replaced by [redacted]."""
    return redactor(env)(text)
