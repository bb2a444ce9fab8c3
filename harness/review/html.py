"""report.html: the whole night on one self-contained page.

The plot is embedded as a base64 data URI, the style sheet is inline, there is no
script and no external resource, so the file opens from disk (or an e-mail attachment)
with no network. Every string that came from the TSV or from git is HTML-escaped: a
description or diff is data, never markup. The page is rendered from what it is given
(the summary, the rows, the PNG, the kept commits' diffs, every attempt's diff); it reads no
TSV and no git. Each row of the table of all experiments links to its attempt's change, a
collapsed <details> block further down (no script needed).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.review.summary import Summary
from harness.store.ledger import Row

MAX_DIFF_CHARS = 200_000  # per commit; a runaway diff should not make the page unusable
MAX_ATTEMPT_DIFF_CHARS = 20_000  # per attempt in the page's list of every attempt's change

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-family: ui-monospace, monospace; }
tr.keep td { background: #edf7ed; } tr.crash td { background: #fdecea; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
pre.diff { background: #fafafa; border: 1px solid #ddd; padding: .6em; overflow-x: auto; }
.add { color: #1b5e20; background: #e8f5e9; } .del { color: #b71c1c; background: #ffebee; }
.hunk { color: #6a1b9a; } img.plot { width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #666; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(x: float | None, spec: str = ".6f") -> str:
    return "–" if x is None else format(x, spec)


def _diff_html(diff: str) -> str:
    out = []
    for line in diff.splitlines():
        cls = ""
        if line.startswith("+") and not line.startswith("+++"):
            cls = "add"
        elif line.startswith("-") and not line.startswith("---"):
            cls = "del"
        elif line.startswith("@@"):
            cls = "hunk"
        out.append(f'<span class="{cls}">{_e(line)}</span>' if cls else _e(line))
    return '<pre class="diff">' + "\n".join(out) + "</pre>"


def _duplicate_of(reason: str) -> int | None:
    """n of a reason `duplicate of #n` (an attempt of this night), else None."""
    match = re.fullmatch(r"duplicate of #(\d+)", reason)
    return int(match.group(1)) if match else None


def render_html(
    summary: Summary,
    rows: Sequence[Row],
    png: bytes,
    diffs: Mapping[str, str],
    *,
    diff_note: str = "",
    title: str = "",
    attempts: Mapping[int, str] | None = None,
) -> str:
    """The page as a string; `attempts` (attempt number -> diff) are linked from every row."""
    attempts = attempts or {}
    s = summary
    title = title or f"autoresearch report: {Path(s.source).name or s.metric}"
    best = f"{_num(s.best)} ({s.best_commit}: {s.best_description})" if s.best is not None else "–"
    facts = [
        ("attempts (after the baseline)", s.attempts),
        ("kept / discarded / crashed", f"{s.kept_attempts} / {s.discarded} / {s.crashed}"),
        ("keep rate", "–" if s.keep_rate is None else f"{s.keep_rate * 100:.1f}%"),
        (f"baseline {s.metric}", _num(s.baseline)),
        (f"best {s.metric}", best),
        ("improvement", "–" if s.improvement_pct is None else _num(s.improvement_pct, "+.2f") + "%"),
        ("direction", s.direction),
    ]
    if s.gpu_hours is not None:
        facts.append(("GPU hours", f"{s.gpu_hours:.2f}"))
    elif s.run_hours is not None:
        facts.append(
            ("run hours" + (f" ({', '.join(s.devices)})" if s.devices else ""), f"{s.run_hours:.2f}")
        )
    if s.llm_cost_usd is not None:
        facts.append(("LLM cost", f"${s.llm_cost_usd:.2f}"))
    if s.hardware:
        facts.append(("hardware", "; ".join(s.hardware)))
    if s.workers:
        facts.append(("workers", ", ".join(s.workers)))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        "<table id='summary'>"
        + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
        + "</table>",
        "<h2>Progress</h2>",
        f'<img class="plot" id="progress" alt="progress plot" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode("ascii")}">',
    ]
    if s.skipped_lines:
        parts.append(
            "<p class='note'>Skipped lines: "
            + "; ".join(f"{_e(x['line'])}: {_e(x['why'])}" for x in s.skipped_lines)
            + "</p>"
        )

    parts.append("<h2>Kept improvements</h2>")
    if s.improvements:
        parts.append(
            f"<table id='kept'><tr><th>#</th><th>commit</th><th>{_e(s.metric)}</th><th>delta</th>"
            "<th>gain</th><th>description</th></tr>"
        )
        for st in s.improvements:
            link = (
                f"<a href='#diff-{_e(st.commit)}'>{_e(st.commit)}</a>"
                if st.commit in diffs
                else _e(st.commit)
            )
            parts.append(
                f"<tr class='keep'><td class='num'>{st.n}</td><td><code>{link}</code></td>"
                f"<td class='num'>{st.metric:.6f}</td><td class='num'>{st.delta:+.6f}</td>"
                f"<td class='num'>{st.delta_pct:+.2f}%</td><td>{_e(st.description)}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p class='note'>No experiment beat the baseline.</p>")

    if s.biggest_hits:
        parts.append("<h2>Biggest hits</h2><ol>")
        parts += [
            f"<li>{st.delta_pct:+.2f}% <code>{_e(st.commit)}</code> {_e(st.description)}</li>"
            for st in s.biggest_hits
        ]
        parts.append("</ol>")

    if s.crashes:
        parts.append(
            "<h2>Crashes by reason</h2><table id='crashes'><tr><th>reason</th><th>count</th><th>attempts</th></tr>"
        )
        for reason, items in s.crashes.items():
            what = "<br>".join(
                f"#{_e(c['n'])} <code>{_e(c['commit'])}</code> {_e(c['description'])}" for c in items
            )
            parts.append(
                f"<tr class='crash'><td>{_e(reason)}</td><td class='num'>{len(items)}</td><td>{what}</td></tr>"
            )
        parts.append("</table>")

    parts.append("<h2>Diffs of kept commits</h2>")
    if diffs:
        for st in s.improvements:
            if st.commit in diffs:
                parts.append(
                    f"<h3 id='diff-{_e(st.commit)}'><code>{_e(st.commit)}</code> {_e(st.description)}</h3>"
                )
                parts.append(_diff_html(diffs[st.commit]))
    else:
        parts.append(f"<p class='note'>{_e(diff_note or 'no diffs recorded')}</p>")

    parts.append(f"<h2>All experiments</h2><table id='all'><tr><th>#</th><th>commit</th><th>{_e(s.metric)}</th>"
                 "<th>memory GB</th><th>status</th><th>description</th></tr>")  # fmt: skip
    for i, r in enumerate(rows):
        n = int(r.extra["n"]) if r.extra.get("n", "").isdigit() else i
        commit = f"<code>{_e(r.commit)}</code>"
        reason = r.extra.get("reason", "")
        # A duplicate was never committed: its row links to the change it repeated.
        target = n if n in attempts else _duplicate_of(reason)
        if target in attempts:
            commit = f"<a href='#attempt-{target}'>{commit}</a>"
        why = f" <span class='note'>[{_e(reason)}]</span>" if reason else ""
        parts.append(
            f"<tr class='{_e(r.status)}'><td class='num'>{n}</td><td>{commit}</td>"
            f"<td class='num'>{r.metric:.6f}</td><td class='num'>{r.memory_gb:.1f}</td>"
            f"<td>{_e(r.status)}</td><td>{_e(r.description)}{why}</td></tr>"
        )
    parts.append("</table>")
    if attempts:
        by_n = {int(r.extra["n"]): r for r in rows if r.extra.get("n", "").isdigit()}
        parts.append("<h2>Every attempt's change</h2>")
        for n, diff in sorted(attempts.items()):
            row = by_n.get(n)
            what = f"{row.status} {row.description}" if row is not None else ""
            parts.append(
                f"<details id='attempt-{n}'><summary>#{n} {_e(what)}</summary>{_diff_html(diff)}</details>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(
    summary: Summary,
    rows: Sequence[Row],
    png_path: Path,
    diffs: Mapping[str, str],
    path: Path,
    *,
    diff_note: str = "",
    attempts: Mapping[int, str] | None = None,
) -> Path:
    """Render the page with the PNG at `png_path` embedded, write it to `path`, return the path."""
    page = render_html(summary, rows, png_path.read_bytes(), diffs, diff_note=diff_note, attempts=attempts)
    path.write_text(page, encoding="utf-8")
    return path
