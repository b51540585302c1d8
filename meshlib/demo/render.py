"""How the demo shows itself: a live-updating table per scene on a terminal, plain tables otherwise.

On a TTY each scene's table refreshes while its traffic flows (``rich.live``);
piped or captured (CI, ``| less``, a test), the same tables are printed once,
finished, with ASCII borders and no colour, so the output stays readable text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

__all__ = ["Check", "SceneReport", "Screen"]


@dataclass(frozen=True)
class Check:
    """One claim a scene makes about what the mesh did, and whether the traffic bore it out."""

    claim: str
    ok: bool


@dataclass
class SceneReport:
    """What a scene showed: its table (header + rows), the claims checked, and extra notes."""

    name: str
    title: str
    columns: Sequence[str]
    rows: list[Sequence[object]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tree: Tree | None = None

    def check(self, claim: str, ok: bool) -> None:
        self.checks.append(Check(claim, bool(ok)))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


class Screen:
    """The demo's output: scene headers, live tables, check marks (``file`` defaults to stdout)."""

    def __init__(self, file: IO[str] | None = None, *, force_terminal: bool | None = None) -> None:
        self.console = Console(file=file, force_terminal=force_terminal, highlight=False, soft_wrap=False)
        self.live_tables = self.console.is_terminal
        if not self.live_tables:
            self.console = Console(file=file, force_terminal=False, no_color=True, highlight=False, width=120,
                                   emoji=False)
        self._live: Live | None = None
        self._box = box.ROUNDED if self.live_tables else box.ASCII

    def line(self, text: str = "", style: str = "") -> None:
        self.console.print(Text(text, style=style))

    def scene_start(self, number: int, report: SceneReport, intro: str) -> None:
        self.console.print()
        self.console.rule(Text(f"{number}. {report.title}", style="bold"), style="dim", characters="-")
        for line in intro.strip().splitlines():
            self.line(line.strip(), "dim" if self.live_tables else "")
        if self.live_tables:
            self._live = Live(self._table(report), console=self.console, refresh_per_second=12, transient=False)
            self._live.start()

    def update(self, report: SceneReport) -> None:
        """Redraw the scene's table (only on a terminal: captured output gets the final table once)."""
        if self._live is not None:
            self._live.update(self._table(report))

    def scene_end(self, report: SceneReport) -> None:
        if self._live is not None:
            self._live.update(self._table(report))
            self._live.stop()
            self._live = None
        elif report.rows:
            self.console.print(self._table(report))
        if report.tree is not None:
            self.console.print(report.tree)
        for note in report.notes:
            self.line(note)
        for check in report.checks:
            mark = ("✔" if check.ok else "✘") if self.live_tables else ("ok  " if check.ok else "FAIL")
            self.line(f"  {mark} {check.claim}", "green" if check.ok else "bold red")

    def _table(self, report: SceneReport) -> Table:
        table = Table(box=self._box, show_edge=True, header_style="bold")
        for i, column in enumerate(report.columns):
            table.add_column(column, justify="left" if i == 0 else "right" if _numeric(report, i) else "left")
        for row in report.rows:
            table.add_row(*(str(cell) for cell in row))
        return table


def _numeric(report: SceneReport, index: int) -> bool:
    cells = [row[index] for row in report.rows if index < len(row)]
    return bool(cells) and all(isinstance(c, int | float) for c in cells)
