"""The line between a Ray worker's harness process and the family's coordinator actor.

The harness of a Ray worker runs as a child process of its actor (so Ctrl-C and a lost node
behave as for any night), and it does not join the Ray cluster itself: the actor serves a
loopback socket (`serve`), the harness connects to it (`connect`, from the hidden flag
`--coordinator HOST:PORT` and the key in AUTORESEARCH_COORDINATOR_KEY, which the train runs never
see: names ending in _KEY are secrets), and each call is forwarded to the coordinator actor.
Every call is one request and one answer; an exception is sent back and raised in the harness.
A connection that breaks (the actor or its node is gone) is a HarnessError: the worker's night
ends, and the driver logs what it had in flight.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

from harness.errors import HarnessError
from harness.store.family import Link

KEY_ENV = "AUTORESEARCH_COORDINATOR_KEY"


def serve(forward: Callable[..., Any]) -> tuple[str, str]:
    """Serve `forward(method, *args)` on a loopback port in background threads; returns the
    address (`127.0.0.1:PORT`) and the key (hex) a harness connects with."""
    key = secrets.token_hex(16)
    listener = Listener(("127.0.0.1", 0), authkey=bytes.fromhex(key))
    host, port = listener.address

    def accept() -> None:
        while True:
            try:
                conn = listener.accept()
            except OSError:
                continue  # a client that failed the handshake
            threading.Thread(target=_answer, args=(conn, forward), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return f"{host}:{port}", key


def _answer(conn: Connection, forward: Callable[..., Any]) -> None:
    with conn:
        while True:
            try:
                method, args = conn.recv()
            except (EOFError, OSError):
                return
            try:
                conn.send(("ok", forward(method, *args)))
            except Exception as exc:  # sent back: the harness raises it
                conn.send(("error", f"{type(exc).__name__}: {exc}"))


def connect(address: str, worker: str) -> Link:
    """The link of a Ray worker's harness to its family, through its actor's socket."""
    host, _, port = address.rpartition(":")
    key = os.environ.get(KEY_ENV, "")
    try:
        conn = Client((host, int(port)), authkey=bytes.fromhex(key))
    except (OSError, ValueError, EOFError) as exc:
        raise HarnessError(f"cannot reach the family's coordinator at {address}: {exc}") from exc
    lock = threading.Lock()  # proposals are made in threads; one request and answer at a time

    def call(method: str, *args: Any) -> Any:
        with lock:
            try:
                conn.send((method, args))
                status, value = conn.recv()
            except (OSError, EOFError) as exc:
                raise HarnessError(f"lost the family's coordinator ({exc}); this worker stops") from exc
        if status != "ok":
            raise HarnessError(f"the family's coordinator refused {method}: {value}")
        return value

    return Link(call, worker, remote="origin")
