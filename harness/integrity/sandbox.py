"""The run in an operating-system sandbox: bubblewrap namespaces around the experiment's command.

`Sandbox(...).wrap(argv)` returns the `bwrap` command line that runs `argv` with:

* **a minimal filesystem view**, not the host's: the system folders (/usr, /etc, /opt and the
  /bin, /sbin, /lib* links or folders) and the interpreter's own prefixes read-only, `read_only`
  paths read-only (the tag's worktree, the prepared data cache), `writable` paths and the
  `scratch` folder writable, `hidden` paths replaced by an empty folder or an unreadable node, a fresh /proc, a
  minimal /dev (plus the accelerator's devices with `gpu`), /tmp as a private tmpfs. Nothing
  else exists: not the person's $HOME, the results folder, the git directory or the person's
  checkout (unless a caller names one of them, which the harness never does).
* **its own namespaces**: user (no capabilities: it cannot remount a read-only bind writable,
  even when the harness runs as root), PID (it sees only its own processes in /proc; when its
  first process exits, the kernel kills every process left in it), IPC, UTS, cgroup, and network
  (only loopback) unless `network`.
* **its own session** (`--new-session`: it cannot push keystrokes into the harness's terminal)
  and `--die-with-parent`: if the harness dies, the run dies with it.
* HOME and TMPDIR pointing at `scratch`.

Why bubblewrap rather than calling unshare(2)/mount(2) ourselves: it is the small, audited setuid-free
tool Flatpak runs every app through; it sets the namespaces up in the right order, pivots the root,
drops capabilities and handles the corner cases (a PID-1 reaper, die-with-parent, info fd), none
of which is code we want to own. It needs user namespaces (any current Linux; some containers
forbid them), which is what `probe()` finds out.

`probe()` answers whether a sandbox can be had here, and why not (bwrap missing, not Linux,
user namespaces refused); `choose(mode)` turns `--sandbox auto|on|off` into a yes or no and the
line a night prints at start about it.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError

BWRAP = "bwrap"
#: system folders every run sees read-only (when they exist)
SYSTEM_DIRS = ("/usr", "/etc", "/opt")
#: usually links into /usr (merged-/usr systems), folders on older ones
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: accelerator device nodes exposed with `gpu` (NVIDIA, then AMD ROCm)
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri", "/dev/kfd")
PROBE_TIMEOUT = 20.0
#: what a night without the sandbox gives up (printed at start)
WITHOUT = (
    "runs see the whole filesystem as your user (the guard restores protected files afterwards), "
    "can use the network, and a process that leaves the run's group and scrubs its environment "
    "can outlive it"
)


@dataclass(frozen=True)
class Sandbox:
    """What one run may see and touch. Paths are resolved when the command line is built."""

    scratch: Path  # the run's only writable folder; HOME and TMPDIR point into it
    read_only: tuple[Path, ...] = ()  # extra paths visible read-only (worktree, data cache, ...)
    writable: tuple[Path, ...] = ()  # extra writable paths (e.g. a compile cache)
    hidden: tuple[Path, ...] = ()  # paths that must be invisible (e.g. the validation shard during training)
    network: bool = False
    gpu: bool = False  # expose /dev/nvidia* etc.

    def wrap(self, argv: Sequence[str], *, cwd: Path | None = None, info_fd: int | None = None) -> list[str]:
        """The bwrap command line around `argv`.

        `cwd` (default: the current folder) is where `argv` starts; it must be visible in the
        sandbox (the experiment folder inside a read-only worktree is). `info_fd`: a file
        descriptor bwrap writes its JSON info to (child pid, PID namespace), for the runner's
        check that nothing of the run is left.
        """
        scratch = _real(self.scratch)
        args = [BWRAP, "--unshare-user", "--cap-drop", "ALL", "--unshare-pid", "--unshare-ipc",
                "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session"]  # fmt: skip
        if not self.network:
            args.append("--unshare-net")
        if info_fd is not None:
            args += ["--info-fd", str(info_fd)]
        args += _system_view()
        args += ["--proc", "/proc", "--dev", "/dev"]
        if self.gpu:
            args += _gpu_view()
        if self.network:
            args += _resolver_view()
        args += ["--tmpfs", "/tmp"]
        binds: list[tuple[Path, str]] = [(p, "--ro-bind") for p in _interpreter_paths()]
        binds += [(_real(p), "--ro-bind") for p in self.read_only if p.exists()]
        binds += [(_real(p), "--bind") for p in self.writable if p.exists()]
        binds.append((scratch, "--bind"))
        # parents before children, so a writable folder inside a read-only one is bound on top
        for path, how in sorted(binds, key=lambda b: (len(b[0].parts), b[1] == "--bind")):
            args += [how, str(path), str(path)]
        for path in self.hidden:
            if path.is_dir():
                args += ["--tmpfs", str(_real(path)), "--remount-ro", str(_real(path))]
            elif path.exists():
                args += ["--ro-bind", "/dev/null", str(_real(path))]
        args += ["--setenv", "HOME", str(scratch), "--setenv", "TMPDIR", str(scratch)]
        args += ["--chdir", str(_real(cwd if cwd is not None else Path.cwd()))]
        return [*args, "--", *argv]


def probe() -> tuple[bool, str]:
    """Can a sandbox be had here? (True, what works) or (False, why not). A trial run decides."""
    if not sys.platform.startswith("linux"):
        return False, f"the sandbox needs Linux namespaces (this is {sys.platform})"
    exe = shutil.which(BWRAP)
    if exe is None:
        return False, "bubblewrap (bwrap) is not installed; e.g. `apt-get install bubblewrap`"
    with tempfile.TemporaryDirectory(prefix="ar-probe-") as scratch:
        argv = Sandbox(scratch=Path(scratch)).wrap([sys.executable, "-c", "pass"], cwd=Path("/"))
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"bubblewrap could not run a trial command: {exc}"
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return False, f"bubblewrap cannot create namespaces here ({why}); user namespaces may be disabled"
    return True, f"bubblewrap {_version(exe)}"


def choose(mode: str) -> tuple[bool, str]:
    """`--sandbox auto|on|off` -> (use it, the line to print). `on` without a sandbox is a ConfigError."""
    if mode == "off":
        return False, f"off (--sandbox off): {WITHOUT}"
    ok, why = probe()
    if ok:
        return True, f"on ({why}: read-only view, scratch folder, no network, own PID namespace)"
    if mode == "on":
        raise ConfigError(f"--sandbox on: no sandbox can be had here: {why}")
    return False, f"off (auto: {why}); {WITHOUT}"


# --- what every sandbox sees -----------------------------------------------------------------


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


@functools.lru_cache(maxsize=1)
def _system_view() -> tuple[str, ...]:
    args: list[str] = []
    for d in SYSTEM_DIRS:
        if os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for d in SYSTEM_LINKS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    return tuple(args)


@functools.lru_cache(maxsize=1)
def _interpreter_paths() -> tuple[Path, ...]:
    """The interpreter's prefixes and site-packages folders (a venv, pyenv or conda under $HOME
    works without showing the rest of $HOME)."""
    candidates: list[str] = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    candidates += [sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    candidates += site.getsitepackages()
    if site.ENABLE_USER_SITE:
        candidates.append(site.getusersitepackages())
    return _outermost(Path(os.path.realpath(c)) for c in candidates if c and os.path.isdir(c))


def _outermost(paths: Iterable[Path]) -> tuple[Path, ...]:
    """The paths without those inside another one of them (binding the outer one is enough)."""
    unique = sorted(set(paths), key=lambda p: len(p.parts))
    kept: list[Path] = []
    for p in unique:
        if not any(p.is_relative_to(k) for k in kept):
            kept.append(p)
    return tuple(kept)


def _gpu_view() -> list[str]:
    args: list[str] = []
    for pattern in GPU_DEVICES:
        for dev in sorted(glob.glob(pattern)):
            args += ["--dev-bind", dev, dev]
    # the driver's libraries find the GPUs through /sys (NVML, ROCm's topology)
    if os.path.isdir("/sys"):
        args += ["--ro-bind", "/sys", "/sys"]
    return args


def _resolver_view() -> list[str]:
    """With network: /etc/resolv.conf often links into /run (systemd-resolved); bind its target."""
    target = os.path.realpath("/etc/resolv.conf")
    if target.startswith("/etc/") or not os.path.exists(target):
        return []
    return ["--ro-bind", os.path.dirname(target), os.path.dirname(target)]


def _version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "(version unknown)"
    return out.strip().split()[-1] if out.strip() else "(version unknown)"
