"""The typed schemas of the state files the harness reads back, and the one way each is read.

Every file a night reads that a person, a crash or a run could have damaged is validated here
on read: pending.json (`Pending`), the ledger's seal (`Seal`), the tag lock's owner file, the
transplant queue and its served count, experiment.toml (`ExperimentFile`), replay files
(`ReplyLine`), program.md and notes. The results TSV's rows are checked cell by cell
(`check_row`) by the ledger.

The schemas are pydantic models in strict mode: a number must be a number (not a string, not
a boolean), a count is a non-negative integer, a sha is hex, text is bounded. Any damage is a
`DataError` (or the caller's `ConfigError`) whose one line names the file, says what is wrong
and gives the command that fixes it; nothing is changed on disk before it is raised, so the
command line turns it into exit 2 with that line.

Text files are read with `read_text`: a folder, an unreadable file or one past its size limit
is an error; bytes that are not UTF-8 are decoded with U+FFFD in their place and a warning
(once per file version), never a traceback.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import DataError, HarnessError
from harness.store.text import encodable, sanitize, warn

PROGRAM_LIMIT = 1 << 20  # program.md: the research instructions, sent with every prompt
NOTES_LIMIT = 1 << 20  # notes.md: the research memory
REPLAY_LIMIT = 64 << 20  # a replay file (every reply of a reproduction)
QUEUE_LIMIT = 64 << 20  # the transplant queue
REPLY_LIMIT = 4 << 20  # one reply (a whole-file reply included)
SMALL_LIMIT = 1 << 16  # the seal, pending.json's fixed fields, lock.pid, a served count
MAX_N = 10**9  # attempt numbers: far beyond any night, small enough to stay an exact integer
_SHA = r"^[0-9a-f]{0,40}$"

M = TypeVar("M", bound=BaseModel)


class _Schema(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Pending(_Schema):
    """pending.json: the attempt in flight (written before its run, removed once it is settled).

    `row` is the ledger line the harness decided on, written here just before it is appended,
    so a harness killed between the two finishes the append on --resume, and a line nobody
    journaled is known not to be the harness's.
    """

    n: int = Field(ge=0, le=MAX_N)
    commit: str = Field(default="", pattern=_SHA)
    parent: str = Field(default="", pattern=_SHA)
    description: str = Field(max_length=10_000)
    reply: str = Field(default="", max_length=REPLY_LIMIT)
    agent: str = Field(default="", max_length=200)
    model: str = Field(default="", max_length=200)
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    row: str | None = Field(default=None, max_length=1 << 16)


class Seal(_Schema):
    """<tsv>.seal: the size of the results TSV the harness last wrote and a hash chain over its lines."""

    size: int = Field(ge=0)
    chain: str = Field(pattern=r"^[0-9a-f]{64}$")


class RowCells(BaseModel):
    """The typed cells of one results TSV row (the text of a cell is converted: lax mode)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    commit: str = Field(pattern=r"^[0-9A-Za-z]{1,40}$")
    metric: float = Field(allow_inf_nan=False)
    memory_gb: float = Field(ge=0.0, allow_inf_nan=False)
    status: Literal["keep", "discard", "crash"]
    n: str = Field(default="", pattern=r"^[0-9]{0,10}$")


def validate_row(cells: dict[str, str]) -> RowCells:
    """The cells of a TSV row, typed; ValueError saying what is wrong with the first bad one."""
    try:
        return RowCells.model_validate(cells)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        what = {"metric": "the metric", "memory_gb": "memory_gb", "status": "status", "commit": "commit"}
        if err["type"] in ("float_parsing", "float_type", "finite_number"):
            raise ValueError(f"{what.get(key, key)} {err.get('input')!r} is not a number") from None
        if key == "status":
            raise ValueError(f"status {err.get('input')!r} is not one of keep, discard, crash") from None
        raise ValueError(
            f"{what.get(key, key)}: {err['msg'][0].lower()}{err['msg'][1:]}, got {err.get('input')!r}"
        ) from None


class ReplyLine(BaseModel):
    """One line of a replay file or of the transplant queue: ``{"reply": "..."}`` (other keys are ignored)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    reply: str = Field(max_length=REPLY_LIMIT)


class SandboxTable(_Schema):
    """experiment.toml's [sandbox]: what a run may reach beyond its worktree and scratch folder."""

    network: bool = False
    read: list[str] = Field(default_factory=list, max_length=100)
    env: list[str] = Field(default_factory=list, max_length=100)


class IntegrityTable(_Schema):
    """experiment.toml's [integrity]: the source checks and where the metric comes from."""

    checks: str = "permissive"
    evaluator: str | None = None


class ExperimentFile(_Schema):
    """experiment.toml (ARCHITECTURE.md, "experiment.toml"); the meaning of each key is checked by
    harness.experiment, the types here."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    mutable: list[str] = Field(min_length=1, max_length=100)
    run: str = Field(max_length=10_000)
    metric: str = Field(default="val_bpb", min_length=1, max_length=100)
    direction: Literal["minimize", "maximize"] = "minimize"
    budget_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    timeout_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    dataset: str | None = Field(default=None, max_length=4096)
    devices: list[str] | None = Field(default=None, max_length=10)
    sandbox: SandboxTable = Field(default_factory=SandboxTable)
    integrity: IntegrityTable = Field(default_factory=IntegrityTable)


def describe(exc: ValidationError) -> str:
    """The first problem of a validation error in a few words: "key 'n': Input should be ..."."""
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    if err["type"] == "missing":
        return f"missing key '{where}'"
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return f"key '{where}': {err['msg'][0].lower()}{err['msg'][1:]}, got {got}" if where else err["msg"]


def validate(model: type[M], data: object, where: str, fix: str, error: type[HarnessError] = DataError) -> M:
    """`data` as a `model`; otherwise `error` naming `where`, what is wrong, and `fix`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(sanitize(f"{where}: {describe(exc)}; {fix}")) from None


# --- reading files ---------------------------------------------------------------------------

_warned: set[tuple[str, int, int]] = set()


def read_text(path: Path, *, limit: int, fix: str, what: str = "file") -> str | None:
    """The text of `path`, or None when there is none; DataError for a folder, an unreadable or
    oversized file. Bytes that are not UTF-8 become U+FFFD, with a warning once per version."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); {fix}") from None
    if not _is_file(st.st_mode):
        raise DataError(f"{path}: the {what} is a folder or a special file, not a regular file; {fix}")
    if st.st_size > limit:
        raise DataError(f"{path}: the {what} is {st.st_size:,} bytes, more than the {limit:,} allowed; {fix}")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); {fix}") from None
    if len(raw) > limit:
        raise DataError(f"{path}: the {what} is more than the {limit:,} bytes allowed; {fix}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in _warned:
            _warned.add(key)
            warn(
                f"{path}: the {what} is not UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start}); "
                "read with replacement characters. Save it as UTF-8 to silence this."
            )
        return raw.decode("utf-8", "replace")


def _is_file(mode: int) -> bool:
    return stat.S_ISREG(mode)


def require_file_or_absent(path: Path, fix: str) -> None:
    """DataError when something other than a regular file sits where the harness keeps a file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); {fix}") from None
    if not _is_file(st.st_mode):
        raise DataError(f"{path}: a folder or a special file sits where the harness keeps a file; {fix}")


def read_json(path: Path, model: type[M], *, fix: str, limit: int = SMALL_LIMIT) -> M | None:
    """The JSON object in `path` as a `model`, None when there is no file; DataError otherwise."""
    text = read_text(path, limit=limit, fix=fix, what="JSON file")
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a JSON object; {fix}")
    return validate(model, data, str(path), fix)


def read_count(path: Path, *, fix: str) -> int | None:
    """A file holding one non-negative integer (a served count, a pid); None when there is none."""
    text = read_text(path, limit=SMALL_LIMIT, fix=fix, what="count file")
    if text is None:
        return None
    value = text.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise DataError(sanitize(f"{path}: expected one whole number, found {value[:40]!r}; {fix}"))
    return int(value)


def reply_lines(
    text: str, where: str, fix: str, *, start: int = 0, error: type[HarnessError] = DataError
) -> list[tuple[int, str]]:
    """The (line number, reply) of every non-blank ``{"reply": "..."}`` line of a JSONL text,
    from line `start` + 1 on; `error` naming the line for a damaged one."""
    out: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines()[start:], start=start + 1):
        if not line.strip():
            continue
        at = f"{where}, line {lineno}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            msg = getattr(exc, "msg", str(exc))
            raise error(
                f'{at}: not valid JSON ({msg}); each line must be {{"reply": "..."}}. {fix}'
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("reply"), str):
            raise error(
                f'{at}: expected an object with a string "reply", e.g. {{"reply": "Description: ..."}}. {fix}'
            )
        data["reply"] = encodable(data["reply"])  # a JSON escape can make a lone surrogate
        out.append((lineno, validate(ReplyLine, data, at, fix, error).reply))
    return out


def read_program(path: Path) -> str:
    """program.md: the person's research instructions ("" when there is none)."""
    fix = f"save {path.name} as a UTF-8 text file under {PROGRAM_LIMIT // 1024} KiB"
    return read_text(path, limit=PROGRAM_LIMIT, fix=fix, what="program") or ""


def read_notes(path: Path) -> str:
    """notes.md: the night's research memory ("" when there is none)."""
    fix = f"shorten {path} (or move it away) to under {NOTES_LIMIT // 1024} KiB"
    return read_text(path, limit=NOTES_LIMIT, fix=fix, what="notes file") or ""
