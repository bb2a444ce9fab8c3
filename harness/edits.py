"""Parse an agent's reply and apply its edits to the mutable files.

The reply format (ARCHITECTURE.md, "The agent's reply"): one `Description:` line, then one or
more SEARCH/REPLACE blocks, each preceded by the path of the file it edits; code fences
around the blocks are allowed. A reply that is one fenced block holding a whole file is
also accepted. Optional lines outside the blocks: `Note:` (a line for the research notes) and
`Parent: #n` (build on attempt n's code instead of the best). A sweep request replaces the
edits by `Sweep: NAME=[low, high] [log|int]; ...` and an optional `Trials: k`; it is parsed
here into its text and validated against the file by `harness.agents.sweep`.

`apply_reply` matches each SEARCH text exactly (line by line), then whitespace-tolerantly
(trailing whitespace, a uniform indentation shift, stray blank lines at the ends). It
refuses paths that are not mutable, edits that change nothing, ambiguous matches and a
Python file that no longer parses. Every failure raises `EditError` whose `feedback` is
written for the model: what went wrong and, for a SEARCH that matched nothing, the
nearest lines of the file ("did you mean ...") so the next reply can quote them exactly.
Nothing is applied unless every block applies.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.errors import EditError

REPLY_FORMAT = """\
Reply in exactly this format:

Description: <one line saying what you changed and why>
<path of the file, e.g. experiments/gpt/train.py>
<<<<<<< SEARCH
<lines copied exactly from the current file>
=======
<the lines that replace them>
>>>>>>> REPLACE

Use one SEARCH/REPLACE block per change (each preceded by the file path). The SEARCH part
must match the current file exactly, including indentation, and must be unique in the file:
include a few surrounding lines if needed. Alternatively, reply with the Description line
and one fenced code block holding the whole new file.

Optional lines, after the Description:
Note: <one line for the research notes: an insight or a dead end worth remembering>
Parent: #<n>   (build on the code of recent attempt n instead of the current best: your SEARCH
               parts then quote attempt n's version; its change and yours are applied to the best)

Instead of an edit you may ask for a sweep of numeric UPPERCASE constants of the file, which
an optimizer (TPE) then runs as several experiments on the current best:
Description: <what the sweep explores>
Sweep: NAME=[low, high] log; OTHER=[low, high] int; THIRD=[low, high]
Trials: <how many runs, optional>"""

_SEARCH_RE = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
_DIVIDER_RE = re.compile(r"^\s*={5,9}\s*$")
_REPLACE_RE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
_FENCE_RE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
_DESCRIPTION_RE = re.compile(r"^\W*description\W*:\s*(.*)$", re.IGNORECASE)
_FIELD_RE = re.compile(r"^[\W_]*(note|parent|sweep|trials)[\W_]*:[\s*_`]*(.*?)[\s*_`]*$", re.IGNORECASE)
_PARENT_RE = re.compile(r"^(?:attempt\s*)?#?\s*(\d+)\b", re.IGNORECASE)
_MAX_DESCRIPTION = 200
# A whole-file reply much shorter than the file is almost always a fragment the model
# meant as a snippet; running it would throw the file away.
_MIN_WHOLE_FILE_SHARE = 0.4
_MIN_LINES_FOR_SHARE_CHECK = 30


@dataclass
class Edit:
    """One SEARCH/REPLACE block. `path` is "" when the reply named no file for it."""

    path: str
    search: str
    replace: str


@dataclass
class ParsedReply:
    """A reply split into its parts; `whole_file` is set instead of `edits` for whole-file replies."""

    description: str
    edits: list[Edit]
    whole_file: str | None
    whole_file_path: str | None = None  # the path named with a whole-file reply, if any
    note: str = ""  # the `Note:` line
    parent: int | None = None  # `Parent: #n`
    sweep: str | None = None  # the `Sweep:` line's text: a sweep request instead of edits
    trials: int | None = None  # `Trials: k` of a sweep request


# --------------------------------------------------------------------------- parsing


def _clean_description(text: str) -> str:
    text = text.replace("\t", " ").replace("\r", " ").replace("\n", " ").strip()
    text = text.strip("*_` ").strip()
    return " ".join(text.split())[:_MAX_DESCRIPTION]


def _path_from_line(line: str) -> str:
    """The file path on a line preceding a block, or "" if the line is not a path."""
    text = line.strip()
    fence = _FENCE_RE.match(text)
    if fence:
        text = fence.group(2).strip()
        # "```python experiments/gpt/train.py": the info string may carry the path last.
        parts = text.split()
        text = parts[-1] if len(parts) > 1 else ""
    text = text.strip("`*#_ ").strip()
    text = re.sub(r"^(file|path|filename)\s*:\s*", "", text, flags=re.IGNORECASE)
    text = text.rstrip(":").strip("`*'\" ")
    if not text or any(ch.isspace() for ch in text) or _DESCRIPTION_RE.match(line):
        return ""
    if "/" not in text and "." not in text:
        return ""
    return text


def _fenced_blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(info string, body lines) of each top-level fenced block."""
    blocks: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(lines):
        match = _FENCE_RE.match(lines[i])
        if not match:
            i += 1
            continue
        marker, info = match.group(1), match.group(2).strip()
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(marker) and lines[i].strip().strip(marker[0]) == ""
        ):
            body.append(lines[i])
            i += 1
        blocks.append((info, body))
        i += 1
    return blocks


def _join(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def parse_reply(text: str) -> ParsedReply:
    """Split `text` into description and edits; raise EditError (with feedback) if it is malformed."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    description = ""
    for line in lines:
        match = _DESCRIPTION_RE.match(line)
        if match:
            description = _clean_description(match.group(1))
            break
    if not description:
        raise EditError(
            "the reply has no Description line",
            "Your reply had no `Description:` line (or it was empty). " + REPLY_FORMAT,
        )

    fields = _fields(lines)
    if fields.get("sweep"):
        if any(_SEARCH_RE.match(line) for line in lines):
            raise EditError(
                "the reply is both a sweep request and an edit",
                "Your reply has a `Sweep:` line and SEARCH/REPLACE blocks. Send either an edit or a "
                "sweep request (Description, Sweep and Trials lines only), not both.",
            )
        return _with_fields(ParsedReply(description=description, edits=[], whole_file=None), fields)

    if not any(_SEARCH_RE.match(line) for line in lines):
        return _with_fields(_parse_whole_file(lines, description), fields)

    edits: list[Edit] = []
    last_path = ""
    i = 0
    while i < len(lines):
        if not _SEARCH_RE.match(lines[i]):
            i += 1
            continue
        path = ""
        for back in range(i - 1, -1, -1):
            candidate = lines[back]
            if not candidate.strip():
                continue
            if _FENCE_RE.match(candidate) and not _path_from_line(candidate):
                continue
            if _FIELD_RE.match(candidate) or _DESCRIPTION_RE.match(candidate):
                continue
            if _REPLACE_RE.match(candidate):
                break
            path = _path_from_line(candidate)
            break
        path = path or last_path
        last_path = path
        block_no = len(edits) + 1
        search: list[str] = []
        i += 1
        while i < len(lines) and not _DIVIDER_RE.match(lines[i]):
            if _SEARCH_RE.match(lines[i]) or _REPLACE_RE.match(lines[i]):
                raise _malformed(block_no, "a `=======` line is missing between SEARCH and REPLACE")
            search.append(lines[i])
            i += 1
        if i >= len(lines):
            raise _malformed(block_no, "the `=======` line is missing")
        replace: list[str] = []
        i += 1
        while i < len(lines) and not _REPLACE_RE.match(lines[i]):
            if _SEARCH_RE.match(lines[i]):
                raise _malformed(block_no, "the `>>>>>>> REPLACE` line is missing")
            replace.append(lines[i])
            i += 1
        if i >= len(lines):
            raise _malformed(block_no, "the `>>>>>>> REPLACE` line is missing")
        i += 1
        edits.append(Edit(path=path, search=_join(search), replace=_join(replace)))
    return _with_fields(ParsedReply(description=description, edits=edits, whole_file=None), fields)


def _fields(lines: list[str]) -> dict[str, str]:
    """The first `Note:`, `Parent:`, `Sweep:` and `Trials:` line outside blocks and fences."""
    found: dict[str, str] = {}
    inside = False  # within a SEARCH/REPLACE block or a code fence
    fence = ""
    for line in lines:
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence) and stripped.strip(fence[0]) == "":
                fence = ""
            continue
        if _SEARCH_RE.match(line):
            inside = True
        elif _REPLACE_RE.match(line):
            inside = False
        elif not inside:
            match = _FENCE_RE.match(line)
            if match:
                fence = match.group(1)
                continue
            match = _FIELD_RE.match(line)
            if match:
                found.setdefault(match.group(1).lower(), match.group(2).strip())
    return found


def _with_fields(parsed: ParsedReply, fields: Mapping[str, str]) -> ParsedReply:
    """`parsed` with the optional lines; EditError (with feedback) for a malformed one."""
    parent: int | None = None
    if fields.get("parent"):
        match = _PARENT_RE.match(fields["parent"])
        if match is None:
            raise EditError(
                f"Parent line {fields['parent']!r} names no attempt",
                f"Your `Parent:` line ({fields['parent']!r}) must name one attempt by its number, e.g. "
                "`Parent: #12`. Leave the line out to build on the current best.",
            )
        parent = int(match.group(1))
    trials: int | None = None
    if fields.get("sweep") and fields.get("trials"):
        try:
            trials = int(fields["trials"].split()[0])
        except ValueError:
            raise EditError(
                f"Trials line {fields['trials']!r} is not a number",
                f"Your `Trials:` line ({fields['trials']!r}) must be a whole number, e.g. `Trials: 6`.",
            ) from None
    return dataclasses.replace(
        parsed,
        note=" ".join(fields.get("note", "").split()),
        parent=parent,
        sweep=fields.get("sweep") or None,
        trials=trials,
    )


def _malformed(block_no: int, what: str) -> EditError:
    return EditError(
        f"SEARCH/REPLACE block {block_no} is malformed: {what}",
        f"SEARCH/REPLACE block {block_no} of your reply is malformed: {what}. Nothing was applied. "
        + REPLY_FORMAT,
    )


def _parse_whole_file(lines: list[str], description: str) -> ParsedReply:
    blocks = [(info, body) for info, body in _fenced_blocks(lines) if any(b.strip() for b in body)]
    if not blocks:
        raise EditError(
            "the reply contains no SEARCH/REPLACE block and no fenced file",
            "Your reply contained no SEARCH/REPLACE block, so nothing was changed. " + REPLY_FORMAT,
        )
    if len(blocks) > 1:
        raise EditError(
            f"the reply has {len(blocks)} fenced blocks but no SEARCH/REPLACE block",
            f"Your reply had {len(blocks)} code blocks and no SEARCH/REPLACE block. A whole-file reply "
            "must be exactly one fenced block holding the complete file; for partial changes use "
            "SEARCH/REPLACE blocks. " + REPLY_FORMAT,
        )
    info, body = blocks[0]
    path = _path_from_line("```" + info) if info else ""
    if not path:
        # The path may also stand on the line just before the fence.
        start = next(k for k, line in enumerate(lines) if _FENCE_RE.match(line))
        for back in range(start - 1, -1, -1):
            if lines[back].strip():
                path = _path_from_line(lines[back])
                break
    return ParsedReply(
        description=description, edits=[], whole_file=_join(body), whole_file_path=path or None
    )


# --------------------------------------------------------------------------- applying


def _resolve_path(path: str, mutable: Sequence[str]) -> str:
    """Map the path the model wrote to one mutable path, or raise EditError."""
    allowed = ", ".join(mutable)
    if not path:
        if len(mutable) == 1:
            return mutable[0]
        raise EditError(
            "an edit names no file",
            f"One of your SEARCH/REPLACE blocks was not preceded by a file path. Put the path "
            f"(one of: {allowed}) on the line before each `<<<<<<< SEARCH`.",
        )
    norm = path.replace("\\", "/")
    while norm.startswith("./"):
        norm = norm[2:]
    if norm in mutable:
        return norm
    if ".." not in norm.split("/") and not norm.startswith("/"):
        # The model often writes the path relative to the experiment folder ("train.py").
        suffix = [m for m in mutable if m.endswith("/" + norm)]
        if len(suffix) == 1:
            return suffix[0]
    raise EditError(
        f"{path} is not a mutable file",
        f"You tried to edit `{path}`, which is not editable. Only these files may be changed: "
        f"{allowed}. Nothing was applied.",
    )


def _split(content: str) -> tuple[list[str], str, bool]:
    newline = "\r\n" if "\r\n" in content else "\n"
    return content.splitlines(), newline, content.endswith(("\n", "\r"))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _find(lines: list[str], search: list[str], key: str) -> list[int]:
    n = len(search)
    if key == "exact":
        return [i for i in range(len(lines) - n + 1) if lines[i : i + n] == search]
    want = [s.strip() for s in search]
    return [i for i in range(len(lines) - n + 1) if [x.strip() for x in lines[i : i + n]] == want]


def _shift(replace: list[str], delta: int) -> list[str]:
    """Re-indent the replacement by the indentation offset found between SEARCH and the file."""
    out = []
    for line in replace:
        if not line.strip():
            out.append(line)
        elif delta >= 0:
            out.append(" " * delta + line)
        else:
            cut = min(-delta, _indent(line))
            out.append(line[cut:])
    return out


def _apply_one(content: str, edit: Edit, path: str) -> str:
    lines, newline, trailing = _split(content)
    search = edit.search.replace("\r\n", "\n").split("\n")[:-1] if edit.search else []
    replace = edit.replace.replace("\r\n", "\n").split("\n")[:-1] if edit.replace else []
    if not any(s.strip() for s in search):
        if not any(line.strip() for line in lines):
            return _join(replace).replace("\n", newline)
        raise EditError(
            f"empty SEARCH for {path}",
            f"A SEARCH part for `{path}` was empty. Copy the existing lines you want to change "
            "into SEARCH (to add code, quote the lines next to where it goes and repeat them in REPLACE).",
        )

    new_lines: list[str] | None = None
    hits = _find(lines, search, "exact")
    if hits:
        if len(hits) > 1:
            raise _ambiguous(path, hits, len(search))
        i = hits[0]
        new_lines = lines[:i] + replace + lines[i + len(search) :]
    else:
        # Whitespace-tolerant: ignore blank lines at the ends and compare stripped lines.
        core = list(search)
        while core and not core[0].strip():
            core.pop(0)
        while core and not core[-1].strip():
            core.pop()
        hits = _find(lines, core, "stripped")
        if len(hits) > 1:
            raise _ambiguous(path, hits, len(core))
        if hits:
            i = hits[0]
            deltas = {
                _indent(f) - _indent(s)
                for f, s in zip(lines[i : i + len(core)], core, strict=True)
                if s.strip()
            }
            body = list(replace)
            while body and not body[0].strip():
                body.pop(0)
            while body and not body[-1].strip():
                body.pop()
            if len(deltas) == 1:
                body = _shift(body, deltas.pop())
            new_lines = lines[:i] + body + lines[i + len(core) :]
    if new_lines is None:
        raise EditError(f"SEARCH text not found in {path}", _nearest_feedback(lines, search, path))
    text = newline.join(new_lines)
    return text + newline if (trailing or not lines) and new_lines else text


def _ambiguous(path: str, hits: list[int], n: int) -> EditError:
    where = ", ".join(f"{h + 1}-{h + n}" for h in hits[:5])
    return EditError(
        f"SEARCH text matches {len(hits)} places in {path}",
        f"A SEARCH part matches {len(hits)} places in `{path}` (lines {where}). Include more surrounding "
        "lines so that it matches exactly one place. Nothing was applied.",
    )


def _nearest_feedback(lines: list[str], search: list[str], path: str) -> str:
    """'Did you mean' feedback: the window of the file most similar to the SEARCH lines."""
    head = f"A SEARCH part did not match `{path}` exactly. Nothing was applied."
    want = "\n".join(s.strip() for s in search)
    n = max(1, min(len(search), len(lines)))
    best_ratio, best_i = 0.0, -1
    for i in range(0, max(1, len(lines) - n + 1)):
        have = "\n".join(x.strip() for x in lines[i : i + n])
        matcher = difflib.SequenceMatcher(None, want, have, autojunk=False)
        if matcher.real_quick_ratio() <= best_ratio or matcher.quick_ratio() <= best_ratio:
            continue
        ratio = matcher.ratio()
        if ratio > best_ratio:
            best_ratio, best_i = ratio, i
    searched = "\n".join(search)
    msg = f"{head}\nYour SEARCH was:\n{searched}\n"
    if best_i >= 0 and best_ratio >= 0.5:
        # Show the match with a line of context each side, numbered so the model can find it.
        lo, hi = max(0, best_i - 1), min(len(lines), best_i + n + 1)
        shown = "\n".join(f"{k + 1:5d}| {lines[k]}" for k in range(lo, hi))
        msg += (
            f"Did you mean these lines (lines {best_i + 1}-{best_i + n} of `{path}`, "
            f"{best_ratio:.0%} similar)?\n{shown}\n"
            "Copy the lines exactly (without the line numbers) into SEARCH and send the whole reply again."
        )
    else:
        msg += (
            f"Nothing in `{path}` resembles it. Quote lines that exist in the current file "
            "(shown in full above) and send the whole reply again."
        )
    return msg


def _check_python(path: str, text: str) -> None:
    try:
        ast.parse(text, filename=path)
    except SyntaxError as exc:
        lineno = exc.lineno or 0
        lines = text.splitlines()
        lo, hi = max(0, lineno - 4), min(len(lines), lineno + 3)
        shown = "\n".join(f"{k + 1:5d}{'>' if k + 1 == lineno else '|'} {lines[k]}" for k in range(lo, hi))
        raise EditError(
            f"the edited {path} does not parse: {exc.msg} (line {lineno})",
            f"After your edit `{path}` is not valid Python: {exc.msg} at line {lineno}:\n{shown}\n"
            "Nothing was applied. Fix the edit and send the whole reply again.",
        ) from exc


def _layout(text: str | None) -> str | None:
    """`text` without what no run can see: line endings, trailing spaces, trailing blank lines."""
    if text is None:
        return None
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip("\n")


def apply_reply(parsed: ParsedReply, files: Mapping[str, str], mutable: Sequence[str]) -> dict[str, str]:
    """Return {path: new content} for every mutable file the reply changes.

    `files` maps each mutable path to its current content. Raises EditError (with
    feedback for the model) when any block cannot be applied, a path is not mutable,
    nothing changes, or an edited Python file does not parse. All or nothing.
    """
    mutable = list(mutable)
    new: dict[str, str] = {}
    if parsed.whole_file is not None:
        path = _resolve_path(parsed.whole_file_path or "", mutable)
        old = files.get(path, "")
        old_lines, new_lines = len(old.splitlines()), len(parsed.whole_file.splitlines())
        if old_lines >= _MIN_LINES_FOR_SHARE_CHECK and new_lines < _MIN_WHOLE_FILE_SHARE * old_lines:
            raise EditError(
                f"whole-file reply for {path} has {new_lines} lines, the file has {old_lines}",
                f"Your code block has {new_lines} lines but `{path}` has {old_lines}: it looks like a "
                "fragment, not the whole file. Use SEARCH/REPLACE blocks for partial changes. "
                "Nothing was applied.",
            )
        new[path] = parsed.whole_file
    else:
        if not parsed.edits:
            raise EditError("the reply has no edits", "Your reply contained no edit. " + REPLY_FORMAT)
        failures: list[EditError] = []
        for edit in parsed.edits:
            path = _resolve_path(edit.path, mutable)
            if path not in files:
                raise EditError(
                    f"{path} is not available", f"`{path}` could not be read. Nothing was applied."
                )
            try:
                new[path] = _apply_one(new.get(path, files[path]), edit, path)
            except EditError as exc:
                failures.append(exc)
        if failures:
            summary = "; ".join(str(exc) for exc in failures)
            raise EditError(
                f"{len(failures)} of {len(parsed.edits)} SEARCH/REPLACE blocks did not apply: {summary}",
                "\n\n".join(exc.feedback for exc in failures),
            )
    changed = {p: text for p, text in new.items() if _layout(text) != _layout(files.get(p))}
    if not changed:
        raise EditError(
            "the edit changes nothing",
            "Your edit leaves the file exactly as it was, so there is nothing to run. "
            "Propose a change that actually modifies the code.",
        )
    for path, text in changed.items():
        if path.endswith(".py"):
            _check_python(path, text)
    return changed
