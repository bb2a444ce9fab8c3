"""Where prepare.kernels' Triton kernels can run: whether triton is installed, whether its interpreter is on."""

from __future__ import annotations

import importlib.util
import os

HAVE_TRITON = importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when Triton's interpreter runs kernels on the CPU (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")
