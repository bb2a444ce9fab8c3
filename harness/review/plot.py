"""progress.png: one night at a glance (matplotlib, headless Agg backend).

Every attempt is a point at its position in the TSV (x from 0, the baseline): discarded runs
as faint grey dots, kept runs as green points annotated with their descriptions, crashes as
red marks along the bottom edge (their metric is meaningless), the baseline as a dashed line
and the running best as a step line. The y range is framed on the baseline and the best, so
one terrible run cannot flatten the interesting part; points outside it are drawn as arrows on
the edge. Labels are placed one by one where they overlap neither each other nor the frame
(the biggest gains first; a label with no free place is left out), so none runs into the
title or off the picture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a GPU box; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
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
    fig = figure(rows, summary)
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def figure(rows: Sequence[Row], summary: Summary) -> Figure:
    """The plot as a matplotlib Figure (the caller closes it)."""
    fig, ax = plt.subplots(figsize=(14, 7), dpi=100, layout="constrained")
    _draw(ax, rows, summary)
    fig.canvas.draw()  # the layout is settled: labels can be measured where they will be
    _place_labels(ax, rows, summary)
    return fig


def _draw(ax: Axes, rows: Sequence[Row], summary: Summary) -> None:
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
    if summary.baseline is not None:
        ax.axhline(
            clip(summary.baseline), color="#555555", linestyle="--", linewidth=1, label="baseline", zorder=1
        )

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

    ax.set_xlim(-0.5, max(len(rows) - 0.5, 1.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("experiment #")
    arrow = "lower is better" if summary.direction == "minimize" else "higher is better"
    ax.set_ylabel(f"{summary.metric} ({arrow})")
    title = f"baseline + {summary.attempts} attempts, {summary.kept_attempts} kept"
    if summary.baseline is not None and summary.best is not None:
        title += f": {summary.baseline:.6f} → {summary.best:.6f}"
        if summary.improvement_pct is not None:
            title += f" ({summary.improvement_pct:+.2f}%)"
    ax.set_title(title)
    ax.grid(True, alpha=0.25)
    ax.legend(loc="upper right" if summary.direction == "minimize" else "lower right", fontsize=8)


# Where a label may go, relative to its point (points), tried in this order.
_OFFSETS = ((8, 10), (8, -16), (-8, 10), (-8, -16), (8, 26), (-8, 26), (8, -32), (-8, -32), (8, 42), (-8, 42))
MAX_LABELS = 15


def _place_labels(ax: Axes, rows: Sequence[Row], summary: Summary) -> None:
    """Label the kept points, biggest gains first, each where it overlaps no label before it
    and stays inside the axes (so never on the title, the legend or off the picture)."""
    lo, hi = ax.get_ylim()
    renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    frame = ax.get_window_extent(renderer)
    legend = ax.get_legend()
    taken = [legend.get_window_extent(renderer)] if legend is not None else []
    gains = {s.n: s.delta_pct for s in summary.improvements}
    kept = [
        (i, r) for i, r in enumerate(rows) if r.status == "keep" and i in gains and math.isfinite(r.metric)
    ]
    kept.sort(key=lambda item: -gains[item[0]])
    for i, r in kept[:MAX_LABELS]:
        y = min(max(r.metric, lo), hi)
        for dx, dy in _OFFSETS:
            # parse_math=False: a description is data; "$" in it must not be read as mathtext (a bad
            # formula would raise at draw time and lose the whole report).
            note = ax.annotate(_label(r.description), (i, y), xytext=(dx, dy), textcoords="offset points",
                               ha="left" if dx > 0 else "right", fontsize=7, color="#1b5e20", zorder=5,
                               parse_math=False)  # fmt: skip
            box = note.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in taken):
                taken.append(box)
                break
            note.remove()
