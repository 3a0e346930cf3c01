"""``redis-infer top`` (and ``status --watch`` on a terminal): the live view, drawn with rich.

One screen an operator leaves open: the stream and its rates, each group (lag, pending, oldest pending,
consumers, stale ones), each worker's heartbeat (status, counters, queue), the dead letters and their latest
reasons. It redraws in place every ``--interval`` seconds. rich is optional (``pip install
'redis-infer[monitor]'``): without it, or when the output is not a terminal, the plain text of
``producer/monitor.py`` is printed frame after frame instead.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from producer.monitor import GroupStatus, StreamStatus, WorkerHealth, rates

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

WORKER_COLUMNS = ("status", "ok", "errors", "expired", "batches", "rows", "queued", "redis")


def available() -> bool:
    """Whether rich is installed."""
    return importlib.util.find_spec("rich") is not None


def _e(text: str) -> str:
    """Data (names, reasons: anything Redis holds) shown as written, never read as rich markup."""
    from rich.markup import escape

    return escape(text)


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.1f}s" if ms < 120_000 else f"{ms / 60_000:.1f}min"


def _table(title: str, *columns: str) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left", expand=False, pad_edge=False, min_width=len(title))
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def _groups(groups: list[GroupStatus]) -> Table:
    table = _table("consumer groups", "group", "lag", "pending", "oldest pending", "consumers", "stale")
    for g in groups:
        lag = str(g.lag) if g.lag is not None else f"[yellow]{_e(g.lag_note)}[/]"
        stale = sum(c.stale for c in g.consumers)
        oldest = _age(g.oldest_pending_age_ms)
        table.add_row(
            _e(g.name), lag, str(g.pending), oldest, str(len(g.consumers)), f"[red]{stale}[/]" if stale else "0"
        )
    return table


def _consumers(groups: list[GroupStatus]) -> Table:
    table = _table("consumers", "group / consumer", "pending", "idle", "state")
    for g in groups:
        for c in g.consumers:
            state = "[green]alive[/]" if c.alive else ("[red]STALE (no heartbeat)[/]" if c.stale else "no heartbeat")
            table.add_row(_e(f"{g.name} / {c.name}"), str(c.pending), _age(c.idle_ms), state)
    return table


def _workers(workers: list[WorkerHealth]) -> Table:
    table = _table(f"workers with a live heartbeat: {len(workers)}", "consumer", *WORKER_COLUMNS)
    for w in workers:
        cells = [_e(w.fields.get(column, "-")) for column in WORKER_COLUMNS]
        if cells[0] != "ready":
            cells[0] = f"[yellow]{cells[0]}[/]"
        table.add_row(_e(w.consumer), *cells)
    return table


def _dead_letters(status: StreamStatus) -> Table:
    title = f"dead letters ({_e(status.dead_letter_stream)}): {status.dead_letters}"
    table = _table(title, "id", "original", "worker", "reason")
    for d in status.latest_dead_letters:
        reason = _e(d.reason) + (" (truncated)" if d.truncated else "")
        table.add_row(d.id, _e(d.original_id), _e(d.worker), reason)
    return table


def _header(status: StreamStatus) -> str:
    backlog = "unbounded" if not status.max_backlog else str(status.max_backlog)
    head = f"[bold]stream {_e(status.stream)}[/] (Redis {_e(status.redis_version)})"
    if not status.exists:
        return head + ": [yellow]does not exist[/] (no request was ever sent, or it was deleted)"
    line = head + f"  length {status.length}  backpressure limit {backlog}"
    r = status.rates
    if r is not None:
        added = "unknown (Redis < 7)" if r.added_per_s is None else f"{r.added_per_s:.1f}/s"
        line += (f"\nrates over {r.interval_s:.1f}s: added {added}  served {r.served_per_s:.1f}/s"
                 f"  dead-lettered {r.dead_lettered_per_s:.1f}/s")  # fmt: skip
    return line


def render(status: StreamStatus) -> RenderableType:
    """One frame of the live view."""
    from rich.console import Group
    from rich.text import Text

    parts: list[RenderableType] = [Text.from_markup(_header(status))]
    if status.exists:
        parts.append(_groups(status.groups))
        if any(g.consumers for g in status.groups):
            parts.append(_consumers(status.groups))
    parts.append(_workers(status.workers))
    parts.append(_dead_letters(status))
    parts.extend(Text(f"note: {note}", style="yellow") for note in status.notes)
    return Group(*parts)


def run_live(take: Callable[[], StreamStatus], *, interval_s: float, count: int = 0,
             console: Console | None = None) -> int:  # fmt: skip
    """Redraw ``take()`` every ``interval_s`` seconds until Ctrl-C (or ``count`` frames); exit code 0."""
    from rich.live import Live

    current = take()
    frames = 1
    try:
        with Live(render(current), console=console, auto_refresh=False, transient=False) as live:
            while not count or frames < count:
                time.sleep(interval_s)  # the sampling period of the rates, not a wait for a condition
                previous, current = current, take()
                current.rates = rates(previous, current)
                live.update(render(current), refresh=True)
                frames += 1
    except KeyboardInterrupt:
        pass
    return 0
