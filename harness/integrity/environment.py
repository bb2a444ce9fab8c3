"""The environment of one run: an allow-list, with or without the sandbox.

A run gets only what it needs to run and nothing that could be a credential:

* from the harness's environment: PATH (with the harness interpreter's folder first), the locale
  (LANG, LANGUAGE, LC_*), TZ, LD_LIBRARY_PATH, and the accelerator and threading variables
  (CUDA_*, NVIDIA_*, NCCL_*, HIP_*, ROCR_*, MLX_*, MKL_*, OMP_NUM_THREADS, TORCHINDUCTOR_*,
  TRITON_*), minus any of those whose name or value looks like a secret;
* the names experiment.toml's `[sandbox] env` lists (the person asked for them: passed as they are);
* what the harness sets for the run (`harness_vars`: AUTORESEARCH_*, PYTHONPATH,
  PYTHONUNBUFFERED, the compile-cache folders);
* HOME and TMPDIR = the run's scratch folder.

Nothing else: not the agent's API keys, not GITHUB_PAT, DATABASE_URL, AWS_*, SLACK_WEBHOOK_URL or
PIP_INDEX_URL, not the harness's own AUTORESEARCH_* knobs (prices, retry settings). A variable an
outside project needs is named in experiment.toml, which the agent cannot edit.

`ALLOW_LIST` is the switch the planted-cheat tests turn off to show what the allow-list stops
(the harness's whole environment then reaches the run); nothing else changes it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from harness.credentials import is_secret

ALLOWED_NAMES = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
     "PYTHONUNBUFFERED"}
)  # fmt: skip
ALLOWED_PREFIXES = (
    "LC_",
    "CUDA_",
    "NVIDIA_",
    "NCCL_",
    "HIP_",
    "ROCR_",
    "MLX_",
    "MKL_",
    "TORCHINDUCTOR_",
    "TRITON_",
)
#: turned off only by the planted-cheat tests (the cheat must be shown to win without it)
ALLOW_LIST = True


def allowed(name: str, value: str) -> bool:
    """Whether a variable of the harness's environment may reach a run (before experiment.toml's names)."""
    if is_secret(name, value):
        return False
    return name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)


def run_environment(
    base: Mapping[str, str],
    harness_vars: Mapping[str, str],
    *,
    scratch: Path,
    extra_names: Iterable[str] = (),
) -> dict[str, str]:
    """The environment of one run: the allowed part of `base`, the `extra_names` experiment.toml
    lists, `harness_vars`, HOME and TMPDIR in `scratch`, and the harness's interpreter first on PATH."""
    if ALLOW_LIST:
        env = {k: v for k, v in base.items() if allowed(k, v)}
        env.update({k: base[k] for k in extra_names if k in base})
    else:
        env = dict(base)
    env.update(harness_vars)
    env["HOME"] = env["TMPDIR"] = str(scratch)
    env.setdefault("PYTHONUNBUFFERED", "1")
    bindir = os.path.dirname(sys.executable)
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    env["PATH"] = os.pathsep.join([bindir, *path])
    return env
