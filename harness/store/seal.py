"""The ledger's seal: which bytes of a results TSV the harness itself wrote.

A run executes the agent's code as the harness's user, so it can append a line to the TSV (a
forged `keep` for its own attempt) and then kill the harness; without a record of its own, a
restarted harness would take that line as the attempt's outcome. The seal is that record:
``<tsv>.seal`` holds the size of the TSV after the harness's last append and a hash chain over
its lines (``chain_k = sha256(chain_{k-1} || line_k)``, starting from 64 zeros), updated under
the ledger's lock right after each append.

Reading a TSV against its seal splits it in two:

  * the sealed part (the first `size` bytes, whose chain must match): the harness wrote it;
  * the tail: bytes appended after the last seal. Either the one row the harness journaled in
    pending.json just before appending it (killed between the append and the seal), which is
    trusted, or anything else (a forged row, a torn write), which is not: the loop moves it to
    ``<tsv>.untrusted`` and cuts the TSV back to the sealed size.

A sealed part whose chain does not match means the file was edited behind the harness's back
(by hand, or by a run while no harness watched): that is a DataError naming the file and the
way out (``rm <tsv>.seal`` once the person is sure of the file). A TSV without a seal (a tag
begun by an older version, or a hand-made file) is trusted as it is and sealed.

What it does not stop: a run that rewrites the seal and the journal too. The guard restores
both while the harness lives; after a kill -9 only isolating the run (no write access to
results/) closes that, which is the sandbox's job.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.errors import DataError
from harness.store.atomic import write_atomic
from harness.store.schema import Seal, read_json

START = "0" * 64


def seal_path(tsv: Path) -> Path:
    return tsv.with_name(tsv.name + ".seal")


def untrusted_path(tsv: Path) -> Path:
    return tsv.with_name(tsv.name + ".untrusted")


def extend(chain: str, data: bytes) -> str:
    """The chain after the lines of `data` (whole lines, each ending in a newline)."""
    for line in data.splitlines(keepends=True):
        chain = hashlib.sha256(chain.encode("ascii") + line).hexdigest()
    return chain


def read(tsv: Path) -> Seal | None:
    """The TSV's seal, or None when it has none."""
    where = seal_path(tsv)
    return read_json(
        where,
        Seal,
        fix=f"if {tsv} is as you want it, remove the seal (rm {where}) and run the same command again",
    )


def write(tsv: Path, seal: Seal) -> None:
    write_atomic(seal_path(tsv), json.dumps(seal.model_dump()) + "\n")


def split(tsv: Path, raw: bytes, seal: Seal | None) -> tuple[bytes, bytes, str]:
    """(the sealed bytes, the tail after them, the chain over the sealed bytes).

    Without a seal everything is sealed (trusted as it is). DataError when the sealed part
    does not match the seal.
    """
    if seal is None:
        body = raw
        return body, b"", extend(START, body)
    where = seal_path(tsv)
    if len(raw) < seal.size or extend(START, raw[: seal.size]) != seal.chain:
        raise DataError(
            f"{tsv} is not what the harness last wrote (it does not match {where}): it was edited, "
            f"cut or replaced since. If you changed it on purpose, remove the seal (rm {where}) and run "
            "the same command again; otherwise restore the file from a backup"
        )
    return raw[: seal.size], raw[seal.size :], seal.chain


def quarantine(tsv: Path, tail: bytes) -> Path:
    """Keep an untrusted tail for the person to look at (appended to <tsv>.untrusted)."""
    where = untrusted_path(tsv)
    with open(where, "ab") as fh:
        fh.write(tail if tail.endswith(b"\n") else tail + b"\n")
    return where
