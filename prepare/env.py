"""The active run settings, read from the environment the harness sets for each run.

    AUTORESEARCH_DEVICE       cuda | mlx | cpu  (default: cuda when torch sees a GPU, else cpu)
    AUTORESEARCH_TIME_BUDGET  training seconds, overrides the profile's TIME_BUDGET (--budget)
    AUTORESEARCH_DATASET      arithmetic | climbmix | text:PATH  (default arithmetic)
    AUTORESEARCH_CACHE        cache root (default ~/.cache/autoresearch)
    AUTORESEARCH_HAND_OFF     the folder where hand_off writes the trained model (set by the harness)

Device detection imports torch, so it happens only when a profile value is first asked for,
never at `import prepare` time (the harness imports prepare and must stay light).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

import constants
from prepare.errors import DataError

DEFAULT_DATASET = "arithmetic"


def default_cache_root() -> Path:
    return Path.home() / ".cache" / "autoresearch"


def cache_root() -> Path:
    value = os.environ.get("AUTORESEARCH_CACHE", "").strip()
    return Path(value).expanduser() if value else default_cache_root()


def dataset_spec() -> str:
    return os.environ.get("AUTORESEARCH_DATASET", "").strip() or DEFAULT_DATASET


def hand_off_dir() -> Path | None:
    """Where `hand_off` writes the model for the harness's evaluator (None: a run by hand)."""
    value = os.environ.get("AUTORESEARCH_HAND_OFF", "").strip()
    return Path(value) if value else None


@functools.lru_cache(maxsize=1)
def _detected_device() -> str:
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device() -> str:
    """The device profile name: AUTORESEARCH_DEVICE, else detected (cuda if available, else cpu)."""
    value = os.environ.get("AUTORESEARCH_DEVICE", "").strip().lower()
    if not value or value == "auto":
        return _detected_device()
    if value not in constants.PROFILE_NAMES:
        raise DataError(
            f"AUTORESEARCH_DEVICE={value!r} is not a device profile; "
            f"use one of {', '.join(constants.PROFILE_NAMES)} (or unset it to auto-detect)"
        )
    return value


def active_profile() -> dict[str, Any]:
    """The active profile's constants, with the harness's budget override applied."""
    values: dict[str, Any] = constants.profile(device())
    budget = os.environ.get("AUTORESEARCH_TIME_BUDGET", "").strip()
    if budget:
        try:
            seconds = float(budget)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise DataError(f"AUTORESEARCH_TIME_BUDGET={budget!r} must be a positive number of seconds")
        values["TIME_BUDGET"] = seconds
    return values
