"""What the machine and the repository say: experiment folder (and its repo root), device, dataset, profile, agent.

The auto-detected parts of `harness.settings.Settings`, each returning its answer with the
reason it was chosen where the choice is not obvious (printed at start). Probing CUDA runs
in a child process with a timeout, so a broken torch install can neither hang nor crash us.
Nothing here changes anything on disk.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, RepoError
from harness.store.git import Repo


def find_experiment(spec: str, cwd: Path) -> tuple[Path, Path]:
    """(experiment dir, repo root) for `--experiment NAME|PATH`."""
    as_path = Path(spec).expanduser()
    candidates: list[Path] = []
    if os.sep in spec or "/" in spec or spec.startswith(".") or as_path.is_absolute():
        candidates.append(as_path if as_path.is_absolute() else cwd / as_path)
    else:
        try:
            root = Repo.find(cwd).root
            candidates.append(root / "experiments" / spec)
        except RepoError:
            pass
        candidates.append(cwd / "experiments" / spec)
        candidates.append(cwd / spec)
    for cand in candidates:
        if (cand / "experiment.toml").is_file():
            exp_dir = cand.resolve()
            return exp_dir, Repo.find(exp_dir).root
    known = known_experiments(cwd)
    hint = f" Known experiments: {', '.join(known)}." if known else ""
    raise ConfigError(
        f"unknown experiment {spec!r}: no experiment.toml at {candidates[0]}.{hint} "
        "Pass a name under experiments/ or a path to a folder with an experiment.toml."
    )


def known_experiments(cwd: Path) -> list[str]:
    try:
        root = Repo.find(cwd).root
    except RepoError:
        root = cwd
    folder = root / "experiments"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "experiment.toml").is_file())


def profile_values(repo_root: Path, device: str) -> dict[str, Any]:
    """The device profile of the repository's constants.py, without importing it as `constants`.

    constants.py is pure Python; it exposes `PROFILES = {"cuda": {...}, ...}` and/or a
    `profile(device)` function. Returns {} when the repository has none (bare experiment repos).
    """
    path = repo_root / "constants.py"
    if not path.is_file():
        return {}
    spec = importlib.util.spec_from_file_location("_autoresearch_constants", path)
    if spec is None or spec.loader is None:
        return {}
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a broken constants.py is the person's to fix; say where
        raise ConfigError(f"{path} failed to load: {type(exc).__name__}: {exc}") from exc
    profiles = getattr(module, "PROFILES", None)
    if isinstance(profiles, Mapping) and isinstance(profiles.get(device), Mapping):
        return dict(profiles[device])
    getter = getattr(module, "profile", None)
    if callable(getter):
        try:
            got = getter(device)
        except Exception:  # noqa: BLE001 - an unknown device simply has no profile
            got = None
        if isinstance(got, Mapping):
            return dict(got)
        if got is not None:
            return {k: getattr(got, k) for k in dir(got) if k.isupper()}
    return {k: v for k, v in vars(module).items() if k.isupper() and isinstance(v, int | float)}


def detect_device(env: Mapping[str, str], probe_timeout: float = 60.0) -> tuple[str, str]:
    """(device, why): mlx on Apple silicon when mlx imports, cuda when torch sees a GPU, else cpu."""
    if mlx_has_metal() and importlib.util.find_spec("mlx"):
        return "mlx", "Apple silicon with mlx installed"
    if importlib.util.find_spec("torch") is None:
        return "cpu", "torch is not installed"
    # In a child process with a timeout: a broken CUDA install can hang or crash on import.
    code = "import torch; print('CUDA' if torch.cuda.is_available() else 'NOCUDA')"
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=probe_timeout,
            env=dict(env),
        )
    except subprocess.TimeoutExpired:
        return "cpu", f"probing torch.cuda timed out after {probe_timeout:g} s"
    except OSError as exc:
        return "cpu", f"could not probe torch.cuda: {exc}"
    if out.returncode == 0 and out.stdout.strip().endswith("NOCUDA"):
        return "cpu", "torch sees no CUDA GPU"
    if out.returncode == 0 and out.stdout.strip().endswith("CUDA"):
        return "cuda", "torch.cuda.is_available()"
    last = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return "cpu", f"importing torch failed ({last})"


def check_device(device: str, env: Mapping[str, str]) -> None:
    """Refuse a device this machine cannot train on, before anything runs (ConfigError)."""
    if device == "cuda":
        found, why = detect_device(env)
        if found != "cuda":
            raise ConfigError(
                f"--device cuda, but {why}: use --device cpu, or --device auto to pick what is here"
            )
    elif device == "mlx" and importlib.util.find_spec("mlx") is None:
        raise ConfigError(
            "--device mlx, but mlx is not installed: pip install mlx (Apple silicon) or mlx[cpu]"
        )


def describe_hardware(device: str) -> str:
    """What a run trains on, for the TSV's `hardware` column: the GPU (or CPU) model and the
    framework's version, e.g. "1x NVIDIA H100 80GB HBM3 | torch 2.9.1" or
    "AMD EPYC 7B13 (2 cores) | torch 2.13.0+cpu". Nothing is imported; each probe is bounded."""
    if device == "cuda":
        names = nvidia_gpus()
        chip = f"{len(names)}x {names[0]}" if names else "CUDA GPU (nvidia-smi not available)"
    elif device == "mlx" and mlx_has_metal():
        chip = _sysctl("machdep.cpu.brand_string") or "Apple silicon"
    else:
        chip = f"{_cpu_model()} ({os.cpu_count() or '?'} cores)"
    framework = "mlx" if device == "mlx" else "torch"
    try:
        version = importlib.metadata.version(framework)
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    return f"{chip} | {framework} {version}"


def nvidia_gpus(query: str = "name") -> list[str]:
    """nvidia-smi's `query` (e.g. "name,memory.total") of each GPU this process may use
    (CUDA_VISIBLE_DEVICES applied), a CSV line each; [] without nvidia-smi."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = [line.strip() for line in out.splitlines() if line.strip()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and gpus:
        ids = [int(i) for i in visible.split(",") if i.strip().isdigit() and int(i) < len(gpus)]
        gpus = [gpus[i] for i in ids] or gpus
    return gpus


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return _sysctl("machdep.cpu.brand_string") or platform.processor() or platform.machine() or "unknown CPU"


def _sysctl(name: str) -> str:
    if sys.platform != "darwin":
        return ""
    try:
        return subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def mlx_has_metal() -> bool:
    """True where MLX runs on Apple's GPU (Metal); on Linux mlx[cpu] has only its CPU backend."""
    return sys.platform == "darwin" and platform.machine() == "arm64"


def detect_profile(device: str) -> tuple[str, str]:
    """(constants.py profile, why when it differs from the device).

    MLX without Metal (Linux, mlx[cpu]) runs on a CPU roughly ten times slower than PyTorch's:
    the mlx profile's 2 M evaluation tokens would take ten minutes a run, so it gets the cpu
    profile's sizes, as a CPU smoke run should."""
    if device == "mlx" and not mlx_has_metal():
        return "cpu", "mlx without Metal runs on its CPU backend: the cpu profile's sizes"
    return device, ""


def detect_dataset(cache_root: Path) -> tuple[str, str]:
    """(dataset, why): climbmix when its cache is ready, else the offline arithmetic set."""
    try:
        from prepare.datasets import check_ready
    except ImportError:
        return "arithmetic", "prepare.datasets is not available"
    try:
        check_ready("climbmix", cache_root)
    except Exception as exc:  # noqa: BLE001 - any "not ready" means: use the offline set
        del exc  # its message names the fix; the short form below is enough for the start banner
        return "arithmetic", f"climbmix is not prepared in {cache_root}; `autoresearch prepare` fetches it"
    return "climbmix", f"climbmix is prepared in {cache_root}"


def detect_agent(env: Mapping[str, str]) -> tuple[str, str]:
    """(agent, why) for `--agent auto`: claude with an Anthropic key, openai with an OpenAI key or
    base URL, else the offline search agent."""
    if env.get("ANTHROPIC_API_KEY"):
        return "claude", "ANTHROPIC_API_KEY is set"
    if env.get("OPENAI_API_KEY"):
        return "openai", "OPENAI_API_KEY is set"
    if env.get("OPENAI_BASE_URL"):
        return "openai", "OPENAI_BASE_URL is set"
    return (
        "search",
        "no ANTHROPIC_API_KEY, OPENAI_API_KEY or OPENAI_BASE_URL: the offline hyperparameter search",
    )
