"""progress.png: one night at a glance (matplotlib, headless Agg backend).

Every attempt is a point at its position in the TSV: discarded runs as faint grey dots,
kept runs as green points annotated with their descriptions, crashes as red marks along
the bottom edge (their metric is meaningless), and the running best as a step line. The
y range is framed on the baseline and the best, so one terrible run cannot flatten the
interesting part; points outside it are drawn as arrows on the edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a GPU box; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from harness.review.summary import Summary  # noqa: E402
from harness.store.ledger import (
    Row,  # noqa: E402
    better,  # noqa: E402
)

MAX_LABEL = 48  # characters of a description shown next to its point


def _label(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _frame(values: Sequence[float], summary: Summary) -> tuple[float, float]:
    """A y range that shows the baseline, the best and the near misses."""
    anchors = [v for v in (summary.baseline, summary.best) if v is not None]
    lo, hi = (min(anchors), max(anchors)) if anchors else (min(values), max(values))
    span = (hi - lo) or abs(hi) * 0.05 or 1.0
    if summary.direction == "minimize":
        return lo - 0.15 * span, hi + 0.6 * span
    return lo - 0.6 * span, hi + 0.15 * span


def plot_progress(rows: Sequence[Row], summary: Summary, path: Path) -> Path:
    """Draw the night into `path` (a PNG) and return the path."""
    fig, ax = plt.subplots(figsize=(14, 7), dpi=100)
    try:
        _draw(ax, rows, summary)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _draw(ax: plt.Axes, rows: Sequence[Row], summary: Summary) -> None:
    scored = [(i, r) for i, r in enumerate(rows) if r.scored]
    if not scored:
        ax.text(0.5, 0.5, "no scored experiments yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    lo, hi = _frame([r.metric for _, r in scored], summary)
    ax.set_ylim(lo, hi)

    def clip(v: float) -> float:
        return min(max(v, lo), hi)

    inside = [(i, r.metric) for i, r in scored if r.status != "keep" and lo <= r.metric <= hi]
    outside = [(i, clip(r.metric)) for i, r in scored if r.status != "keep" and not lo <= r.metric <= hi]
    if inside:
        ax.scatter(
            [i for i, _ in inside],
            [v for _, v in inside],
            s=14,
            color="#9e9e9e",
            alpha=0.45,
            label="discarded",
            zorder=2,
        )
    if outside:
        ax.scatter([i for i, _ in outside], [v for _, v in outside], s=18, color="#9e9e9e", alpha=0.45, marker="^" if summary.direction == "minimize" else "v",
                   label="discarded (off scale)", zorder=2)  # fmt: skip

    kept = [(i, r) for i, r in scored if r.status == "keep"]
    ax.scatter([i for i, _ in kept], [clip(r.metric) for _, r in kept], s=46, color="#2e7d32",
               edgecolor="black", linewidth=0.5, label="kept", zorder=4)  # fmt: skip
    for k, (i, r) in enumerate(kept):
        # Rotate the label offset so neighbouring annotations do not sit on each other.
        dy = (14, -18, 30)[k % 3]
        # parse_math=False: a description is data; "$" in it must not be read as mathtext (a bad
        # formula would raise at draw time and lose the whole report).
        ax.annotate(_label(r.description), (i, clip(r.metric)), xytext=(6, dy), textcoords="offset points",
                    fontsize=7, rotation=20, color="#1b5e20", zorder=5, parse_math=False)  # fmt: skip

    # The running best over kept rows, held until the next kept row improves it.
    xs: list[float] = []
    ys: list[float] = []
    best: float | None = None
    for i, r in kept:
        if best is None or better(r.metric, best, summary.direction):
            best = r.metric
            xs.append(i)
            ys.append(clip(best))
    if xs:
        xs.append(len(rows) - 1)
        ys.append(ys[-1])
        ax.step(xs, ys, where="post", color="#2e7d32", linewidth=1.6, label="running best", zorder=3)

    crashes = [i for i, r in enumerate(rows) if r.status == "crash"]
    if crashes:
        edge = blended_transform_factory(ax.transData, ax.transAxes)
        ax.scatter(crashes, [0.02] * len(crashes), transform=edge, marker="x", color="#c62828", s=24,
                   label="crash", zorder=4)  # fmt: skip

    ax.set_xlim(-1, max(len(rows), 2))
    ax.set_xlabel("experiment #")
    arrow = "lower is better" if summary.direction == "minimize" else "higher is better"
    ax.set_ylabel(f"{summary.metric} ({arrow})")
    title = f"{summary.experiments} experiments, {summary.kept} kept"
    if summary.baseline is not None and summary.best is not None:
        title += f": {summary.baseline:.6f} → {summary.best:.6f}"
        if summary.improvement_pct is not None:
            title += f" ({summary.improvement_pct:+.2f}%)"
    ax.set_title(title)
    ax.grid(True, alpha=0.25)
    ax.legend(loc="upper right" if summary.direction == "minimize" else "lower right", fontsize=8)
