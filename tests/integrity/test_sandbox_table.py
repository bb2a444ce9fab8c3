"""experiment.toml's `[sandbox]` table through `autoresearch run --sandbox on`: what it names reaches
the run, and nothing of it without the table.

The probe train file reports in its summary block whether it could read a file outside the
repository, whether it got an environment variable of the harness's, and whether it could open a
connection to a listener on the host's loopback. Without the table the sandbox denies all three;
with `read`, `env` and `network = true` the run gets exactly those.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from support.gitrepo import git
from support.sandboxing import needs_sandbox

from harness.commands.main import main
from tests.conftest import Toy

PROBE = '''"""Reports what it can reach beyond its worktree: a file, a variable, the network."""

import os
import socket

EXTRA, PORT = {extra!r}, {port}

try:
    with open(EXTRA) as fh:
        extra_seen = int(fh.read().strip() == "outside data")
except OSError:
    extra_seen = 0
env_seen = int(os.environ.get("TOY_SETTING") == "from the harness")
try:
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as conn:
        conn.sendall(b"hello")
    net_seen = 1
except OSError:
    net_seen = 0
print("step 00000 (100.0%) | loss: 3.000000", flush=True)
print("---")
print("val_bpb:          1.000000")
print(f"extra_seen:       {{extra_seen}}")
print(f"env_seen:         {{env_seen}}")
print(f"net_seen:         {{net_seen}}")
'''

TABLE = """
[sandbox]
network = true
read = [{extra!r}]
env = ["TOY_SETTING"]
"""


def _listener() -> tuple[socket.socket, list[bytes]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    got: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            got.append(conn.recv(100))
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, got


@needs_sandbox
@pytest.mark.parametrize("table", [False, True])
def test_the_sandbox_table_grants_exactly_what_it_names(
    toy_experiment: Toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: bool
) -> None:
    toy = toy_experiment
    extra = tmp_path / "outside" / "data.txt"
    extra.parent.mkdir()
    extra.write_text("outside data\n")
    monkeypatch.setenv("TOY_SETTING", "from the harness")
    server, got = _listener()
    try:
        toy.train.write_text(PROBE.format(extra=str(extra), port=server.getsockname()[1]))
        toml = toy.train.parent / "experiment.toml"
        if table:
            toml.write_text(toml.read_text() + TABLE.format(extra=str(extra.parent)))
        git(toy.repo, "commit", "-qam", "probe what the run can reach")
        argv = ["run", "--device", "cpu", "--tag", "t", "--agent", f"replay:{toy.replay_file([])}",
                "--baseline-runs", "1", "--sandbox", "on"]  # fmt: skip
        assert main(argv) == 0
    finally:
        server.close()
    (row,) = toy.tsv("t")
    assert row["status"] == "keep", row
    seen = json.loads(row["summary"])
    want = 1.0 if table else 0.0
    assert (seen["extra_seen"], seen["env_seen"], seen["net_seen"]) == (want, want, want), seen
    assert got == ([b"hello"] if table else [])
