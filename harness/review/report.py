"""The morning report: what happened overnight, as text, progress.png, report.html and summary.json.

    autoresearch report --tag nov21            # results/nov21.tsv -> results/nov21/{progress.png,report.html}
    autoresearch report --tsv FILE --json      # only the summary JSON on stdout

The numbers come from `harness.review.summary`; this module gathers what the renderers need
(each kept commit's diff from the tag's branch and every attempt's diff from its attempt ref,
when the repository has them), hands it to
`harness.review.plot` and `harness.review.html`, which never touch git or the TSV themselves,
and renders the terminal text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.errors import DataError, HarnessError
from harness.review.html import MAX_ATTEMPT_DIFF_CHARS, MAX_DIFF_CHARS, write_html
from harness.review.summary import Summary
from harness.store.git import BRANCH_PREFIX, FETCHED_PREFIX, Repo, attempts_prefix
from harness.store.ledger import Row


@dataclass(frozen=True)
class Written:
    """The files one report wrote."""

    png: Path
    html: Path
    summary_json: Path


def kept_diffs(start: Path, tag: str | None, summary: Summary) -> tuple[dict[str, str], str]:
    """Each kept commit's diff from the tag's branch, when run inside the repository that has it.

    Returns (short sha -> diff, a note saying why diffs are missing, or "").
    """
    if not tag:
        return {}, "diffs unavailable: no tag"
    try:
        view = Repo.find(start)
    except HarnessError:
        return {}, "diffs unavailable: not run inside a git repository"
    branch = BRANCH_PREFIX + tag
    if view.resolve(branch) is None:
        return {}, f"diffs unavailable: no branch {branch} in this repository"
    # Only commits on the tag's branch count: a 7-character sha could name anything elsewhere.
    on_branch = {c.short: c for c in view.log(None, branch)}
    diffs: dict[str, str] = {}
    for step in summary.improvements:
        commit = on_branch.get(step.commit[:7])
        if commit is not None and commit.parent is not None:
            diffs[step.commit] = view.diff(commit.parent, commit.sha)[:MAX_DIFF_CHARS]
    return diffs, ""


def attempt_diffs(start: Path, tag: str | None) -> dict[int, str]:
    """Every attempt's change (keeps, discards, crashes), by attempt number, from the attempt refs
    (refs/autoresearch/<tag>/attempts/<n>, or a fetched copy); {} outside the repository."""
    if not tag:
        return {}
    try:
        view = Repo.find(start)
    except HarnessError:
        return {}
    found: dict[int, str] = {}
    for pattern in (f"{FETCHED_PREFIX}*/{tag}/attempts/*", attempts_prefix(tag)):  # the local ref wins
        for ref, sha in sorted(view.refs(pattern).items()):
            tail = ref.rsplit("/", 1)[1]
            if tail.isdigit():
                found[int(tail)] = sha
    diffs: dict[int, str] = {}
    for n, sha in sorted(found.items()):
        if view.resolve(f"{sha}^") is not None:
            diffs[n] = view.git("diff", f"{sha}^", sha, strip=False)[:MAX_ATTEMPT_DIFF_CHARS]
    return diffs


def write_report(
    summary: Summary,
    rows: list[Row],
    out: Path,
    diffs: dict[str, str],
    *,
    diff_note: str = "",
    attempts: dict[int, str] | None = None,
) -> Written:
    """Write progress.png, report.html and summary.json into `out` (created); `attempts` are
    every attempt's diffs by number, linked from the table of all experiments."""
    # matplotlib takes about a second to import: only a report that draws pays for it, not
    # every `autoresearch` start (the command table imports this module).
    from harness.review.plot import plot_progress

    try:
        out.mkdir(parents=True, exist_ok=True)
        png = plot_progress(rows, summary, out / "progress.png")
        html = write_html(
            summary, rows, png, diffs, out / "report.html", diff_note=diff_note, attempts=attempts
        )
        summary_json = out / "summary.json"
        summary_json.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write the report to {out}: {exc.strerror}; pass --out DIR") from exc
    return Written(png, html, summary_json)


def _fmt(x: float | None, spec: str = ".6f") -> str:
    return "-" if x is None else format(x, spec)


def _pace(steps: float | None, tokens_per_s: float | None) -> str:
    """ "953 steps, 1.66M tok/s": what a run got through in its budget (empty when not recorded)."""
    parts = []
    if steps is not None:
        parts.append(f"{steps:.0f} steps")
    if tokens_per_s is not None:
        parts.append(
            f"{tokens_per_s / 1e6:.2f}M tok/s" if tokens_per_s >= 1e5 else f"{tokens_per_s:,.0f} tok/s"
        )
    return ", ".join(parts)


def counts_line(s: Summary) -> str:
    """Attempts and outcomes, the baseline counted apart: "baseline + 9 attempts | kept 2 | ..."."""
    rate = "-" if s.keep_rate is None else f"{s.keep_rate * 100:.1f}%"
    head = (
        f"baseline + {s.attempts} attempts"
        if s.baseline is not None
        else f"{s.attempts} attempts (no baseline)"
    )
    return (
        f"{head} | kept {s.kept_attempts} | discarded {s.discarded} | crashed {s.crashed}"
        + (f" | other {s.other}" if s.other else "")
        + f" | keep rate {rate}"
    )


def best_line(s: Summary) -> str:
    """Baseline -> best, or what is missing."""
    if s.best is None:
        return "no run produced a metric yet" + ("" if s.baseline is not None else " (the baseline crashed?)")
    best = f"best {s.best:.6f} ({s.best_commit}: {s.best_description})"
    if s.baseline is None:
        return best
    return f"baseline {s.baseline:.6f} -> {best} | improvement {_fmt(s.improvement_pct, '+.2f')}%"


def hours_line(s: Summary) -> str:
    """GPU hours on a GPU, run hours otherwise, with the hardware the rows name."""
    parts = []
    if s.gpu_hours is not None:
        parts.append(f"GPU hours {s.gpu_hours:.2f}")
    elif s.run_hours is not None:
        on = f" on {', '.join(s.devices)}" if s.devices else ""
        parts.append(f"run hours {s.run_hours:.2f}{on}")
    if s.llm_cost_usd is not None:
        parts.append(f"LLM cost ${s.llm_cost_usd:.2f}")
    if s.hardware:
        parts.append("hardware " + "; ".join(s.hardware))
    if s.workers:
        parts.append("workers " + ", ".join(s.workers))
    return " | ".join(parts)


def render_text(s: Summary) -> str:
    """The summary as the person reads it in a terminal."""
    lines = [f"{s.source}  ({s.metric}, {s.direction})", counts_line(s), best_line(s)]
    pace = _pace(s.baseline_steps, s.baseline_tokens_per_s)
    if pace:
        lines.append(f"baseline pace: {pace} (tokens/s by the harness's clock)")
    if hours_line(s):
        lines.append(hours_line(s))
    if s.improvements:
        lines += ["", "Kept improvements, in order:"]
        lines += [
            f"  #{st.n:<4} {st.commit:8} {st.metric:.6f} {st.delta:+.6f}  {st.description}"
            + (f"  [{pace}]" if (pace := _pace(st.num_steps, st.tokens_per_s)) else "")
            for st in s.improvements
        ]
    if s.biggest_hits:
        lines += ["", "Biggest hits:"]
        lines += [f"  {st.delta_pct:+.2f}%  {st.commit:8} {st.description}" for st in s.biggest_hits]
    if s.crashes:
        lines += ["", "Crashes by reason:"]
        for reason, items in s.crashes.items():
            lines.append(f"  {reason} ({len(items)}): " + "; ".join(str(c["description"]) for c in items[:5]))
    return "\n".join(lines)
