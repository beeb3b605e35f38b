"""Tables drawn row by row: wrapped cells, zebra rows, headings repeated on every page."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Literal

from app.reports.document import (
    ACCENT,
    ALERT_FILL,
    ALERT_INK,
    CONTENT_TOP,
    INK,
    MARGIN,
    MUTED,
    RGB,
    RULE,
    WARN_FILL,
    WARN_INK,
    ZEBRA,
    ReportDocument,
)

PAD_X = 1.6
PAD_Y = 1.3
LEADING = 1.32  # line height as a multiple of the font size


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: its heading, its share of the page width and its alignment."""

    title: str
    weight: float = 1.0
    align: Literal["L", "R", "C"] = "L"


@dataclass(frozen=True, slots=True)
class Styled:
    """A cell with emphasis: bold text, a text colour and/or a background."""

    text: str
    bold: bool = False
    ink: RGB | None = None
    fill: RGB | None = None


Cell = str | Styled

_ALERT_WORDS = frozenset({"severe", "life-threatening", "life threatening", "high", "critical", "anaphylaxis"})
_WARN_WORDS = frozenset({"moderate", "medium"})


def is_alert(severity: str) -> bool:
    """Whether a severity is one printed in red (severe, life-threatening, high, critical)."""
    return severity.strip().lower() in _ALERT_WORDS


def severity_cell(severity: str) -> Cell:
    """Severe/high/critical in red, moderate/medium in amber, anything else plain."""
    level = severity.strip().lower()
    if level in _ALERT_WORDS:
        return Styled(severity, bold=True, ink=ALERT_INK, fill=ALERT_FILL)
    if level in _WARN_WORDS:
        return Styled(severity, ink=WARN_INK, fill=WARN_FILL)
    return severity


def status_cell(status: str) -> Cell:
    """Blocked or rejected administrations stand out; recorded ones stay plain."""
    level = status.strip().lower()
    if level in {"blocked", "rejected", "refused", "not_done", "missed"}:
        return Styled(status, bold=True, ink=ALERT_INK)
    return status


def key_values(doc: ReportDocument, pairs: Iterable[tuple[str, Cell]], *, size: float = 8.5) -> None:
    """Label/value pairs as a two-column block (labels muted, values wrapped)."""
    rows = ((Styled(name, ink=MUTED), value) for name, value in pairs)
    draw_table(doc, (Column("Field", 1), Column("Value", 3.2)), rows, heading=False, zebra=False,
               track=False, size=size)


@dataclass(frozen=True, slots=True)
class _Layout:
    columns: Sequence[Column]
    widths: Sequence[float]
    size: float
    line: float
    max_lines: int
    caption: str
    heading: bool


def draw_table(doc: ReportDocument, columns: Sequence[Column], rows: Iterable[Sequence[Cell]], *,
               caption: str = "", heading: bool = True, zebra: bool = True, track: bool = True,
               size: float = 8.0) -> int:
    """Draw `rows` under `columns`, breaking pages as needed; returns the number of rows drawn.

    Rows are consumed lazily, so a generator keeps memory flat for long logs. No rows: nothing
    is drawn (the caller prints a note). A row taller than a page is cut with an ellipsis.
    `track` counts rows towards the document's progress.
    """
    remaining = iter(rows)
    first = next(remaining, None)
    if first is None:
        return 0
    layout = _layout(doc, columns, size, caption, heading)
    doc.ensure(_heading_height(doc, layout) + layout.line + 2 * PAD_Y)
    _draw_heading(doc, layout)
    count = 0
    for count, row in enumerate(chain([first], remaining), start=1):
        _draw_row(doc, layout, row, shaded=zebra and count % 2 == 0)
        if track:
            doc.progress.tick()
    doc.y += 2
    return count


def _layout(doc: ReportDocument, columns: Sequence[Column], size: float, caption: str,
            heading: bool) -> _Layout:
    total = sum(column.weight for column in columns)
    widths = [doc.epw * column.weight / total for column in columns]
    line = size * 0.3528 * LEADING
    layout = _Layout(columns, widths, size, line, 1, caption, heading)
    room = doc.limit - CONTENT_TOP - _heading_height(doc, layout) - 6 - 2 * PAD_Y
    return _Layout(columns, widths, size, line, max(1, int(room / line)), caption, heading)


def _heading_lines(doc: ReportDocument, layout: _Layout) -> list[list[str]]:
    doc.use(layout.size - 0.5, bold=True)
    return [doc.wrap(c.title, w - 2 * PAD_X) for c, w in zip(layout.columns, layout.widths, strict=True)]


def _heading_height(doc: ReportDocument, layout: _Layout) -> float:
    if not layout.heading:
        return 0.0
    return max(len(lines) for lines in _heading_lines(doc, layout)) * layout.line + 2 * PAD_Y


def _draw_heading(doc: ReportDocument, layout: _Layout) -> None:
    if not layout.heading:
        return
    lines = _heading_lines(doc, layout)
    height = _heading_height(doc, layout)
    doc.set_fill_color(*ACCENT)
    doc.rect(MARGIN, doc.y, doc.epw, height, style="F")
    doc.use(layout.size - 0.5, bold=True, ink=(255, 255, 255))
    _draw_lines(doc, layout, lines, [c.align for c in layout.columns])
    doc.y += height


def _draw_row(doc: ReportDocument, layout: _Layout, row: Sequence[Cell], *, shaded: bool) -> None:
    cells = [cell if isinstance(cell, Styled) else Styled(cell) for cell in row]
    lines = []
    for cell, width in zip(cells, layout.widths, strict=True):
        doc.use(layout.size, bold=cell.bold)
        wrapped = doc.wrap(cell.text, width - 2 * PAD_X)
        if len(wrapped) > layout.max_lines:
            wrapped = wrapped[: layout.max_lines - 1] + [doc.fit(wrapped[layout.max_lines - 1] + " …",
                                                                 width - 2 * PAD_X)]
        lines.append(wrapped)
    height = max(len(cell_lines) for cell_lines in lines) * layout.line + 2 * PAD_Y
    if doc.y + height > doc.limit:
        _continue_on_next_page(doc, layout)
    x = MARGIN
    for cell, width in zip(cells, layout.widths, strict=True):
        fill = cell.fill or (ZEBRA if shaded else None)
        if fill:
            doc.set_fill_color(*fill)
            doc.rect(x, doc.y, width, height, style="F")
        x += width
    for index, cell in enumerate(cells):
        doc.use(layout.size, bold=cell.bold, ink=cell.ink or INK)
        _draw_cell(doc, layout, index, lines[index])
    doc.set_draw_color(*RULE)
    doc.line(MARGIN, doc.y + height, MARGIN + doc.epw, doc.y + height)
    doc.y += height


def _continue_on_next_page(doc: ReportDocument, layout: _Layout) -> None:
    doc.add_page()
    if layout.caption:
        doc.use(7.5, ink=MUTED)
        doc.text(MARGIN, doc.y + 2.5, f"{layout.caption} (continued)")
        doc.y += 4.5
    _draw_heading(doc, layout)


def _draw_lines(doc: ReportDocument, layout: _Layout, lines: Sequence[Sequence[str]],
                aligns: Sequence[str]) -> None:
    for index, cell_lines in enumerate(lines):
        _draw_cell(doc, layout, index, cell_lines, aligns[index])


def _draw_cell(doc: ReportDocument, layout: _Layout, index: int, lines: Sequence[str],
               align: str | None = None) -> None:
    """Draw one cell's lines at the current row's top (font and colour already selected)."""
    left = MARGIN + sum(layout.widths[:index])
    width = layout.widths[index]
    align = align or layout.columns[index].align
    ascent = layout.size * 0.3528 * 0.78 + (layout.line - layout.size * 0.3528) / 2
    for number, line in enumerate(lines):
        if not line:
            continue
        x = left + PAD_X
        if align != "L":
            spare = width - 2 * PAD_X - doc.measure(line)
            x += spare if align == "R" else spare / 2
        doc.text(x, doc.y + PAD_Y + number * layout.line + ascent, line)
