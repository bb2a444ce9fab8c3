"""Whether the bubblewrap sandbox works on this machine, decided once for the whole test run.

Tests that need it are marked `needs_sandbox`: they skip, with bubblewrap's own reason, where no
sandbox can be had (macOS, a container without user namespaces). CI installs bubblewrap and sets
`CI_REQUIRE_SANDBOX=1` once a trial run works, so there a missing sandbox is an error at
collection instead of a quiet skip of every isolation test.
"""

from __future__ import annotations

import os

import pytest

from harness.integrity.sandbox import probe

SANDBOX, WHY = probe()

if not SANDBOX and os.environ.get("CI_REQUIRE_SANDBOX") == "1":
    raise RuntimeError(f"CI_REQUIRE_SANDBOX=1 but no sandbox can be had: {WHY}")

needs_sandbox = pytest.mark.skipif(not SANDBOX, reason=f"no sandbox here: {WHY}")
