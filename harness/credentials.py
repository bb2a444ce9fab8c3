"""Which environment variables may hold credentials.

API keys must never reach logs, results, commits or the experiment's environment. Two places
act on that: the runner drops these variables from the environment of every run, and the
prompt builder replaces their values by [redacted] in everything sent to a model. Both ask
`is_secret`, so they cannot disagree about what a secret is.

A secret is a name ending in _KEY, _TOKEN or _CREDENTIALS, containing SECRET, PASSWORD or
PASSWD, starting with ANTHROPIC_ or OPENAI_, or one of API_KEY, TOKEN, SECRET, PASSWORD.
This module imports nothing from the harness, so every layer may use it.
"""

from __future__ import annotations

_SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_CREDENTIALS")
_SECRET_WORDS = (
    "SECRET",
    "PASSWORD",
    "PASSWD",
)  # anywhere in the name: AWS_SECRET_ACCESS_KEY, DB_PASSWORD_FILE
_SECRET_PREFIXES = ("ANTHROPIC_", "OPENAI_")
_SECRET_NAMES = ("API_KEY", "TOKEN", "SECRET", "PASSWORD")


def is_secret(name: str) -> bool:
    """True for environment variable names that may hold credentials."""
    upper = name.upper()
    return (
        upper in _SECRET_NAMES
        or upper.endswith(_SECRET_SUFFIXES)
        or upper.startswith(_SECRET_PREFIXES)
        or any(word in upper for word in _SECRET_WORDS)
    )
