"""The run's environment is an allow-list: checked in a real child process."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness.integrity.environment import allowed, run_environment
from harness.night.runner import run

BASE = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/person",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "CUDA_VISIBLE_DEVICES": "0",
    "NCCL_DEBUG": "WARN",
    "OMP_NUM_THREADS": "4",
    "TORCHINDUCTOR_MAX_AUTOTUNE": "1",
    "HF_HOME": "/data/hf",
    "ANTHROPIC_API_KEY": "sk-ant-secret-0000000000",
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    "OPENAI_API_KEY": "sk-secret-00000000000000",
    "GITHUB_PAT": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "DATABASE_URL": "postgres://u:pw-pw-pw-pw@db/x",
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "aws-access-secret-secret",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/xyz",
    "PIP_INDEX_URL": "https://user:pass-pass@pypi.internal/simple",
    "CUDA_TOKEN": "looks-like-a-secret-but-has-an-allowed-prefix",
    "AUTORESEARCH_PRICES": '{"m": [1, 2]}',
    "SSH_AUTH_SOCK": "/tmp/ssh-x/agent.1",
    "EDITOR": "vim",
}


def test_only_the_allow_list_reaches_a_real_child(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    harness_vars = {"AUTORESEARCH_DEVICE": "cpu", "PYTHONPATH": str(tmp_path)}
    env = run_environment(BASE, harness_vars, scratch=scratch, extra_names=["HF_HOME"])
    (tmp_path / "env.py").write_text("import json, os\nprint(json.dumps(dict(os.environ)))\n")
    result = run(f"{sys.executable} env.py", tmp_path, env, tmp_path / "env.log", timeout=60)
    seen = json.loads([ln for ln in result.log_path.read_text().splitlines() if ln.startswith("{")][0])
    seen.pop("AUTORESEARCH_RUN_ID")  # the runner's own
    seen.pop("PWD", None)  # the shell's
    seen.pop("SHLVL", None)
    seen.pop("_", None)
    assert seen == {
        "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin",
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "CUDA_VISIBLE_DEVICES": "0",
        "NCCL_DEBUG": "WARN",
        "OMP_NUM_THREADS": "4",
        "TORCHINDUCTOR_MAX_AUTOTUNE": "1",
        "HF_HOME": "/data/hf",
        "AUTORESEARCH_DEVICE": "cpu",
        "PYTHONPATH": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
    }


def test_a_secret_under_an_allowed_prefix_stays_out() -> None:
    assert not allowed("CUDA_TOKEN", BASE["CUDA_TOKEN"])
    assert not allowed("NCCL_SOCKET", "https://user:pw@host/x")  # a URL with a password
    assert allowed("CUDA_HOME", "/usr/local/cuda")
