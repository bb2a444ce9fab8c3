"""Compare nights from several GPUs or machines, side by side (`autoresearch compare`).

    autoresearch compare autoresearch/nov21-a100 origin/autoresearch/nov21-h100 [--json]

For each ref (a local branch or a fetched remote-tracking one) it shows the best metric,
experiments, keep rate and hardware (the TSV's `hardware` column: GPU or CPU model and the
torch/MLX version; `worker` for --gpus workers), the final diff against
the common base of all refs, and the kept changes one branch has that another lacks.
Results come from the published results branch that travels with each branch
(`[remote/]autoresearch-results/<tag>`, see `harness.review.publish`), or for a local branch
from `results/<tag>.tsv` on disk. Two kept commits count as the same change when their
diffs add and remove the same lines (a patch id), so a change transplanted from one
machine to another is recognised on both. Each side also says where the code of its night's
attempts is (discards and crashes included, for `autoresearch show`): the local
refs/autoresearch/<tag>/attempts/<n> for a local branch, the fetched copies
refs/autoresearch-fetched/<remote>/<tag>/attempts/<n> for a remote-tracking one, or the fetch
refspec that brings them when this clone has none.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, RepoError
from harness.review.summary import Summary, metric_name, summarize
from harness.store.git import (
    BRANCH_PREFIX,
    FETCHED_PREFIX,
    CommitInfo,
    Repo,
    attempts_prefix,
    fetch_refspec,
    results_ref_for,
    tag_of,
)
from harness.store.ledger import read_any_tsv
from harness.store.paths import TagPaths


@dataclass
class Side:
    """One ref in the comparison."""

    ref: str
    head: str
    tag: str | None
    results_source: str  # where the TSV came from, or why there is none
    summary: Summary | None
    kept: list[CommitInfo]  # first-parent commits since the common base, oldest first
    patch_ids: dict[str, str] = field(default_factory=dict)  # sha -> patch id
    diff: str = ""
    attempts: int = 0  # attempt refs of this night in this clone
    attempts_source: str = ""  # the ref prefix they are under, or how to fetch them


def remote_of(ref: str) -> str | None:
    """The remote of a remote-tracking ref ([refs/remotes/]origin/autoresearch/T -> origin), else None."""
    head, sep, _ = ref.rpartition(BRANCH_PREFIX)
    name = head.removeprefix("refs/remotes/").removeprefix("refs/heads/").strip("/")
    return name if sep and name else None


def attempt_refs(view: Repo, ref: str, tag: str | None) -> tuple[int, str]:
    """How many attempts of `ref`'s night have their code here, and under which prefix (or, when
    none, how to fetch them): local refs for a local branch, fetched copies for a remote one."""
    if tag is None:
        return 0, "not an autoresearch/<tag> branch"
    remote = remote_of(ref)
    prefix = attempts_prefix(tag) if remote is None else f"{FETCHED_PREFIX}{remote}/{tag}/attempts/"
    count = len(view.refs(prefix))
    if count:
        return count, prefix
    if remote is None:
        return 0, f"none under {prefix} (a night from before attempt refs were kept?)"
    return 0, (
        f"not fetched; once per clone: git config --add remote.{remote}.fetch "
        f"'{fetch_refspec(remote)}' && git fetch {remote}"
    )


def patch_id(diff: str) -> str:
    """A fingerprint of a change that ignores line numbers and context: the added and removed lines."""
    keep = []
    for line in diff.splitlines():
        if line.startswith("diff --git") or (line[:1] in "+-" and not line.startswith(("+++", "---"))):
            keep.append(line.rstrip())
    return hashlib.sha1("\n".join(keep).encode("utf-8")).hexdigest()


def load_results(view: Repo, ref: str, tag: str | None) -> tuple[Summary | None, str]:
    """The summary of a ref's night and where it came from (or why there is none)."""
    if tag is None:
        return None, "not an autoresearch/<tag> branch: no results"
    candidates: list[tuple[str, str]] = []  # (label, TSV text)
    local = TagPaths(view.root, tag).tsv
    if view.has_branch(ref.removeprefix("refs/heads/")) and local.is_file():
        candidates.append((str(local), local.read_text(encoding="utf-8", errors="replace")))
    results_ref = results_ref_for(ref)
    text = view.read_file(results_ref, f"results/{tag}.tsv") if results_ref else None
    if text is not None:
        candidates.append((f"{results_ref}:results/{tag}.tsv", text))
    if not candidates:
        return (
            None,
            f"no results found (publish them with `autoresearch publish --tag {tag}`, then git fetch)",
        )
    label, content = candidates[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{tag}.tsv"
        path.write_text(content, encoding="utf-8")
        rows, skipped = read_any_tsv(path)
        summary = summarize(rows, metric_name(path), None, skipped, label) if rows else None
    return summary, label if summary is not None else f"{label} has no readable rows"


def family_members(view: Repo, ref: str) -> list[str]:
    """The worker branches of the family `ref` names (`[remote/]autoresearch/<tag>` whose merged
    ledger results/<tag>.tsv is here with a `worker` column), in the order they first wrote a row;
    [] when `ref` is not a family or none of its workers' branches is here. A local ref falls
    back to the workers' branches on `origin` (a Ray family pushes them there)."""
    tag = tag_of(ref)
    tsv = TagPaths(view.root, tag).tsv if tag else None
    if tag is None or tsv is None or not tsv.is_file():
        return []
    rows, _ = read_any_tsv(tsv)
    workers = list(dict.fromkeys(w for r in rows if (w := r.extra.get("worker", ""))))
    prefix = ref[: len(ref) - len(tag)]
    prefixes = [prefix, f"origin/{prefix}"] if prefix == BRANCH_PREFIX else [prefix]
    members = []
    for w in workers:
        found = next((p + f"{tag}-{w}" for p in prefixes if view.resolve(p + f"{tag}-{w}") is not None), None)
        if found is not None:
            members.append(found)
    return members


def compare(view: Repo, refs: Sequence[str]) -> tuple[str, list[Side]]:
    """The common base of all refs and one Side per ref; a family's ref stands for its workers' branches."""
    if not refs:
        raise ConfigError("name at least one ref, e.g. `autoresearch compare origin/autoresearch/<tag>`")
    refs = [member for ref in refs for member in (family_members(view, ref) or [ref])]
    heads = [view.require(ref) for ref in refs]
    base = view.merge_base(heads)
    if base is None:
        raise RepoError(f"{', '.join(refs)} share no history; compare branches that grew from one repository")
    sides = []
    for ref, head in zip(refs, heads, strict=True):
        tag = tag_of(ref)
        summary, source = load_results(view, ref, tag)
        kept = view.log(base, head)
        ids = {c.sha: patch_id(view.diff(c.parent, c.sha)) for c in kept if c.parent}
        count, where = attempt_refs(view, ref, tag)
        sides.append(Side(ref, head, tag, source, summary, kept, ids, view.diff(base, head), count, where))
    return base, sides


def lacking(a: Side, b: Side) -> list[CommitInfo]:
    """The kept changes of `a` that `b` does not have (by sha or by patch id)."""
    b_ids = set(b.patch_ids.values())
    b_shas = {c.sha for c in b.kept}
    return [c for c in a.kept if c.sha not in b_shas and a.patch_ids.get(c.sha) not in b_ids]


def to_json(base: str, sides: Sequence[Side]) -> dict[str, Any]:
    out: dict[str, Any] = {"base": base, "refs": []}
    for s in sides:
        entry: dict[str, Any] = {
            "ref": s.ref,
            "head": s.head,
            "tag": s.tag,
            "results_source": s.results_source,
            "hardware": _hardware(s),
            "workers": s.summary.workers if s.summary else [],
            "kept_commits": [{"sha": c.sha, "subject": c.subject} for c in s.kept],
            "diff": s.diff,
            "attempt_refs": s.attempts,
            "attempt_refs_source": s.attempts_source,
        }
        if s.summary is not None:
            keys = ("metric", "direction", "experiments", "kept", "attempts", "kept_attempts", "discarded",
                    "crashed", "keep_rate", "baseline", "best", "best_commit", "improvement_pct", "run_hours",
                    "gpu_hours", "devices", "llm_cost_usd")  # fmt: skip
            entry.update({k: getattr(s.summary, k) for k in keys})
        out["refs"].append(entry)
    out["lacks"] = {
        a.ref: {
            b.ref: [{"sha": c.sha, "subject": c.subject} for c in lacking(a, b)] for b in sides if b is not a
        }
        for a in sides
    }
    return out


def _hardware(side: Side) -> list[str]:
    """What the side's rows ran on; rows from before the hardware column name only their worker."""
    if side.summary is None:
        return ["unknown (no results)"]
    return (
        side.summary.hardware
        or side.summary.devices
        or ["not recorded (a TSV from before the hardware column)"]
    )


def _cell(x: object, spec: str = "") -> str:
    if x is None:
        return "-"
    return format(x, spec) if spec and isinstance(x, (int, float)) else str(x)


def render_text(base: str, sides: Sequence[Side], *, diffs: bool = True) -> str:
    width = max(24, *(len(s.ref) + 2 for s in sides))

    def row(label: str, values: Sequence[str]) -> str:
        return f"{label:<22}" + "".join(f"{v:<{width}}" for v in values)

    def stat(key: str, spec: str = "") -> list[str]:
        return [_cell(getattr(s.summary, key) if s.summary else None, spec) for s in sides]

    rates = [
        _cell(s.summary.keep_rate * 100 if s.summary and s.summary.keep_rate is not None else None, ".1f")
        for s in sides
    ]
    lines = [
        row("", [s.ref for s in sides]),
        row("head", [s.head[:7] for s in sides]),
        row("metric", stat("metric")),
        row("best", stat("best", ".6f")),
        row("baseline", stat("baseline", ".6f")),
        row("improvement %", stat("improvement_pct", "+.2f")),
        row("attempts", stat("attempts")),
        row("kept", stat("kept_attempts")),
        row("keep rate %", rates),
        row("hardware", ["; ".join(_hardware(s)) for s in sides]),
        row(
            "workers",
            [", ".join(s.summary.workers) if s.summary and s.summary.workers else "-" for s in sides],
        ),
        row("commits since base", [str(len(s.kept)) for s in sides]),
        row("attempts' code here", [str(s.attempts) for s in sides]),
        f"common base: {base[:7]}",
    ]
    for s in sides:
        if s.summary is None:
            lines.append(f"{s.ref}: {s.results_source}")
    for s in sides:
        if s.tag is not None:
            where = f"under {s.attempts_source}" if s.attempts else s.attempts_source
            lines.append(f"{s.ref}: attempts' code {where} (autoresearch show {s.tag} N)")
    for a in sides:
        for b in sides:
            if a is b:
                continue
            missing = lacking(a, b)
            lines += ["", f"Kept in {a.ref}, missing from {b.ref} ({len(missing)}):"]
            lines += [f"  {c.short} {c.subject}" for c in missing] or ["  (none)"]
    if diffs:
        for s in sides:
            lines += ["", f"=== {s.ref}: final diff against the common base {base[:7]} ==="]
            lines.append(s.diff.rstrip() or "(no changes)")
    return "\n".join(lines)
