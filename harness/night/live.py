"""What a person sees while the night runs: a rich Live panel on a terminal, log lines otherwise.

Everything a view shows goes through `harness.credentials.redact` (run lines are redacted by the
runner already). `make_view(stream)` picks the view: `RichView` when the stream is a TTY (experiment number,
description and which run of it this is, e.g. "baseline (run 2 of 3)", a budget progress bar
fed by the run's `(<pct>%)` progress lines, the last loss, the best so far and the last rows),
`PlainView` for nohup/tmux logs (one timestamped line per event, progress at most every 10 % of
the budget). While the loop waits for the model, the panel says so instead of showing the last
run's bar; after --resume it starts with the tag's best and last rows (`history`). Both
implement `View`; the loop talks to nothing else. `line()` is called from the runner while the
child runs, so views lock.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from harness.credentials import redact
from harness.night.metrics import last_loss, progress_pct

if TYPE_CHECKING:
    from rich.console import Group
    from rich.live import Live

    from harness.store.ledger import Row


class View(Protocol):
    # Set by the loop for LLM agents: one line with the provider state (retrying, PAUSED) and the
    # spend, for views that show a status line (the plain view's messages already say it).
    status_line: Callable[[], str] | None

    def message(self, text: str) -> None: ...
    def history(self, rows: Sequence[Row], best: float | None) -> None: ...
    def waiting(self, text: str) -> None: ...
    def start(self, n: int, description: str, budget: float) -> None: ...
    def line(self, text: str) -> None: ...
    def finish(self, row: Row, best: float | None) -> None: ...
    def close(self) -> None: ...


def _fmt_row(row: Row) -> str:
    reason = row.extra.get("reason", "")
    tail = f" ({reason})" if reason else ""
    return f"{row.commit} {row.metric:.6f} {row.memory_gb:.1f} {row.status:<7} {row.description}{tail}"


class PlainView:
    """Timestamped lines on a stream that nobody watches live (nohup, tmux logs, CI)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.status_line: Callable[[], str] | None = None
        self._lock = threading.Lock()
        self._n = 0
        self._next_pct = 10.0

    def _say(self, text: str) -> None:
        with self._lock:
            print(f"[{time.strftime('%H:%M:%S')}] {redact(text)}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        self._say(text)

    def history(self, rows: Sequence[Row], best: float | None) -> None:
        if best is not None:
            self._say(f"best so far {best:.6f}; last rows:")
        for row in rows:
            self._say(f"  {_fmt_row(row)}")

    def waiting(self, text: str) -> None:
        self._say(text)

    def start(self, n: int, description: str, budget: float) -> None:
        self._n, self._next_pct = n, 10.0
        self._say(f"#{n} start: {description} (budget {budget:g} s)")

    def line(self, text: str) -> None:
        pct = progress_pct(text)
        if pct is None or pct < self._next_pct:
            return
        while self._next_pct <= pct:
            self._next_pct += 10.0
        loss = last_loss(text)
        self._say(f"#{self._n} {pct:5.1f}%" + (f" loss {loss:.4f}" if loss is not None else ""))

    def finish(self, row: Row, best: float | None) -> None:
        best_s = f" | best {best:.6f}" if best is not None else ""
        self._say(f"#{self._n} {_fmt_row(row)}{best_s}")

    def close(self) -> None:
        pass


class RichView:
    """A rich Live panel redrawn a few times a second; messages scroll above it."""

    def __init__(self, stream: TextIO | None = None, last_rows: int = 8) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream or sys.stdout)
        self._lock = threading.Lock()
        self._n = 0
        self._description = ""
        self._budget = 0.0
        self._pct = 0.0
        self._loss: float | None = None
        self._best: float | None = None
        self._waiting = ""  # what the loop waits for between runs ("" while a run goes on)
        self._since = time.monotonic()
        self._rows: deque[Row] = deque(maxlen=last_rows)
        self.status_line: Callable[[], str] | None = None
        self._live: Live = Live(console=self.console, refresh_per_second=4, get_renderable=self._render)
        self._live.start()

    def _render(self) -> Group:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            best = Text(f"best {self._best:.6f}" if self._best is not None else "best -", style="green")
            bar = Table.grid(padding=(0, 1))
            if self._waiting or not self._description:
                head = Text(self._waiting or "starting", style="cyan")
                bar.add_row(Text(f"{time.monotonic() - self._since:.0f} s", style="dim"), best)
            else:
                head = Text.assemble((f"#{self._n} ", "bold"), (self._description, "cyan"))
                bar.add_row(
                    ProgressBar(total=100.0, completed=min(self._pct, 100.0), width=40),
                    Text(f"{self._pct:5.1f}% of {self._budget:g} s"),
                    Text(f"loss {self._loss:.4f}" if self._loss is not None else "loss -"),
                    best,
                )
            rows = Table(box=None, show_header=True, header_style="dim", pad_edge=False)
            for col in ("commit", "metric", "mem", "status", "description"):
                rows.add_column(col)
            style = {"keep": "green", "discard": "yellow", "crash": "red"}
            for r in self._rows:
                reason = r.extra.get("reason", "")
                rows.add_row(
                    r.commit,
                    f"{r.metric:.6f}",
                    f"{r.memory_gb:.1f}",
                    Text(r.status, style=style.get(r.status, "")),
                    r.description + (f" ({reason})" if reason else ""),
                )
            from rich.console import Group

            parts: list[Any] = [head, bar]
            status = self.status_line() if self.status_line is not None else ""
            if status:
                parts.append(Text(status, style="bold red" if "PAUSED" in status else "dim"))
            return Group(*parts, rows)

    def message(self, text: str) -> None:
        from rich.markup import escape

        # Escaped: messages carry provider errors and log text, whose brackets are not markup.
        self._live.console.print(
            f"[dim]{time.strftime('%H:%M:%S')}[/dim] {escape(redact(text))}", markup=True, highlight=False
        )

    def history(self, rows: Sequence[Row], best: float | None) -> None:
        with self._lock:
            self._rows.extend(rows)
            self._best = best

    def waiting(self, text: str) -> None:
        with self._lock:
            self._waiting, self._since = redact(text), time.monotonic()

    def start(self, n: int, description: str, budget: float) -> None:
        with self._lock:
            self._n, self._description, self._budget = n, redact(description), budget
            self._pct, self._loss, self._waiting = 0.0, None, ""

    def line(self, text: str) -> None:
        pct, loss = progress_pct(text), last_loss(text)
        with self._lock:
            if pct is not None:
                self._pct = pct
            if loss is not None:
                self._loss = loss

    def finish(self, row: Row, best: float | None) -> None:
        with self._lock:
            self._rows.append(row)
            self._best = best
            self._pct = 100.0 if row.status != "crash" else self._pct
        self.message(_fmt_row(row))

    def close(self) -> None:
        self._live.stop()


def make_view(stream: TextIO | None = None) -> View:
    """RichView on a terminal, PlainView otherwise."""
    stream = stream or sys.stdout
    return RichView(stream) if stream.isatty() else PlainView(stream)
