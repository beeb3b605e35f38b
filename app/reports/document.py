"""The report page: embedded DejaVu fonts, header and footer on every page, text blocks.

Layout is done here rather than with fpdf2's `multi_cell`/`table`, whose line breaking costs
~2 ms a cell (a 5,000-row log took 90 s); words are measured once and cached instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fpdf import FPDF

from app.reports.progress import Progress

RGB = tuple[int, int, int]
INK: RGB = (33, 37, 41)
MUTED: RGB = (108, 117, 125)
ACCENT: RGB = (22, 66, 110)
RULE: RGB = (208, 213, 220)
ZEBRA: RGB = (243, 246, 250)
ALERT_INK: RGB = (170, 30, 30)
ALERT_FILL: RGB = (252, 226, 226)
WARN_INK: RGB = (133, 86, 0)
WARN_FILL: RGB = (255, 243, 209)
OK_INK: RGB = (22, 115, 55)

FONT = "DejaVu"
FONTS_DIR = Path(__file__).resolve().parent / "fonts"
MARGIN = 14.0
CONTENT_TOP = 33.0
FOOTER_SPACE = 17.0
_WIDTH_CACHE_LIMIT = 100_000


def format_timestamp(moment: datetime) -> str:
    """'2025-03-04 14:02 UTC' (the zone name or offset when known)."""
    zone = moment.tzname() or ""
    return f"{moment:%Y-%m-%d %H:%M} {zone}".rstrip()


@dataclass(frozen=True)
class Frame:
    """What every report shares: who it is for, when it was made, where progress goes."""

    organisation: str
    generated_at: datetime
    progress: Progress

    def document(self, title: str, subject: str = "", *, landscape: bool = False) -> ReportDocument:
        """A new document with this frame's header details."""
        return ReportDocument(organisation=self.organisation, title=title, subject=subject,
                              generated_at=self.generated_at, landscape=landscape,
                              progress=self.progress)


class ReportDocument(FPDF):
    """An A4 report with a header (organisation, title, time, subject) and 'Page N of M'."""

    def __init__(self, *, organisation: str, title: str, generated_at: datetime, subject: str = "",
                 landscape: bool = False, progress: Progress | None = None) -> None:
        super().__init__(orientation="L" if landscape else "P", unit="mm", format="A4")
        self.organisation, self.report_title, self.subject = organisation, title, subject
        self.generated = format_timestamp(generated_at)
        self.progress = progress or Progress(None)
        self._widths: dict[tuple[str, float, str], float] = {}
        self._ink: tuple[RGB, object] | None = None
        self.add_font(FONT, "", str(FONTS_DIR / "DejaVuSans.ttf"))
        self.add_font(FONT, "B", str(FONTS_DIR / "DejaVuSans-Bold.ttf"))
        self.set_margins(MARGIN, CONTENT_TOP, MARGIN)
        self.set_auto_page_break(False)
        self.set_creation_date(generated_at)
        self.set_title(title)
        self.set_author(organisation)
        self.set_creator("Triage")
        self.set_lang("en")
        self.add_page()

    @property
    def limit(self) -> float:
        """The lowest y the body may reach on a page."""
        return self.h - FOOTER_SPACE

    # --- typesetting ---------------------------------------------------------------------------

    def use(self, size: float, bold: bool = False, ink: RGB = INK) -> None:
        """Select the font size, weight and text colour."""
        # fpdf2's setters are costly at ~10 calls a cell, so only call them on a change.
        style = "B" if bold else ""
        if self.font_style != style or self.font_size_pt != size or self.font_family != FONT.lower():
            self.set_font(FONT, style, size)
        if self._ink != (ink, self.text_color):
            self.set_text_color(*ink)
            self._ink = (ink, self.text_color)

    def measure(self, text: str) -> float:
        """Width of `text` in the current font, cached per font and size."""
        key = (self.font_style, self.font_size_pt, text)
        width = self._widths.get(key)
        if width is None:
            if len(self._widths) > _WIDTH_CACHE_LIMIT:
                self._widths.clear()
            width = self._widths[key] = self.get_string_width(text)
        return width

    def wrap(self, text: str, width: float) -> list[str]:
        """Break `text` into lines no wider than `width` in the current font."""
        lines: list[str] = []
        for paragraph in text.split("\n"):
            lines.extend(self._wrap_paragraph(paragraph, width))
        return lines

    def _wrap_paragraph(self, text: str, width: float) -> list[str]:
        lines: list[str] = []
        current: list[str] = []
        current_width, space = 0.0, self.measure(" ")
        for word in text.split():
            word_width = self.measure(word)
            if word_width > width:  # a word longer than the column: break it anywhere
                pieces = self._break_word(word, width)
                if current:
                    lines.append(" ".join(current))
                lines.extend(pieces[:-1])
                current, current_width = [pieces[-1]], self.measure(pieces[-1])
                continue
            candidate = current_width + space + word_width if current else word_width
            if current and candidate > width:
                lines.append(" ".join(current))
                current, current_width = [word], word_width
            else:
                current.append(word)
                current_width = candidate
        lines.append(" ".join(current))
        return lines

    def _break_word(self, word: str, width: float) -> list[str]:
        pieces, piece, piece_width = [], "", 0.0
        for char in word:
            char_width = self.measure(char)
            if piece and piece_width + char_width > width:
                pieces.append(piece)
                piece, piece_width = "", 0.0
            piece += char
            piece_width += char_width
        pieces.append(piece)
        return pieces

    def fit(self, text: str, width: float) -> str:
        """`text` cut with an ellipsis to fit `width` on one line."""
        text = " ".join(text.split())
        if self.measure(text) <= width:
            return text
        while text and self.measure(text + "…") > width:
            text = text[:-1]
        return text.rstrip() + "…"

    # --- page furniture ------------------------------------------------------------------------

    def header(self) -> None:
        """Organisation, generation time, report title and subject, above an accent rule."""
        right = self.w - MARGIN
        self.use(7.5, ink=MUTED)
        stamp = f"Generated {self.generated}"
        stamp_width = self.measure(stamp)
        self.text(right - stamp_width, 12.5, stamp)
        self.use(9, bold=True, ink=ACCENT)
        self.text(MARGIN, 12.5, self.fit(self.organisation, self.epw - stamp_width - 6))
        self.use(14, bold=True)
        self.text(MARGIN, 20, self.fit(self.report_title, self.epw))
        if self.subject:
            self.use(8.5, ink=MUTED)
            self.text(MARGIN, 25.5, self.fit(self.subject, self.epw))
        self.set_draw_color(*ACCENT)
        self.set_line_width(0.5)
        self.line(MARGIN, 28, right, 28)
        self.set_line_width(0.2)
        self.set_xy(MARGIN, CONTENT_TOP)

    def footer(self) -> None:
        """A rule, 'Page N of M' and a confidentiality notice."""
        y = self.h - 12
        self.set_draw_color(*RULE)
        self.line(MARGIN, y - 3.5, self.w - MARGIN, y - 3.5)
        self.use(7, ink=MUTED)
        notice = "Confidential: contains personal health information"
        self.text(self.w - MARGIN - self.measure(notice), y, notice)
        # Left-aligned and through cell(): fpdf2 substitutes the page-count alias only on the
        # cell path, into a space reserved for three digits (which would leave a gap if flush right).
        self.set_xy(MARGIN - self.c_margin, y - 2.6)
        self.cell(self.epw / 2, 3.5, f"Page {self.page_no()} of {self.str_alias_nb_pages}")

    # --- blocks --------------------------------------------------------------------------------

    def ensure(self, height: float) -> None:
        """Start a new page unless `height` fits below the current position."""
        if self.y + height > self.limit:
            self.add_page()

    def section(self, title: str, keep_with: float = 22) -> None:
        """A section heading, kept on a page with at least `keep_with` mm of what follows."""
        self.ensure(9 + keep_with)
        if self.y > CONTENT_TOP + 0.5:
            self.y += 3
        self.use(10.5, bold=True, ink=ACCENT)
        self.text(MARGIN, self.y + 4, title)
        self.set_draw_color(*RULE)
        self.line(MARGIN, self.y + 6, self.w - MARGIN, self.y + 6)
        self.y += 8.5

    def paragraph(self, text: str, size: float = 9, ink: RGB = INK, leading: float = 1.45) -> None:
        """Wrapped text over as many pages as needed."""
        self.use(size, ink=ink)
        step = size * 0.3528 * leading
        for line in self.wrap(text, self.epw):
            self.ensure(step)
            self.text(MARGIN, self.y + step * 0.75, line)
            self.y += step
        self.y += 1.5

    def note(self, text: str) -> None:
        """A small grey remark, e.g. 'None recorded.'."""
        self.paragraph(text, size=8.5, ink=MUTED)

    def tiles(self, items: Sequence[tuple[str, str, RGB]]) -> None:
        """A row of summary figures: (label, value, colour) each."""
        gap, height = 4.0, 16.0
        self.ensure(height + 5)
        if self.y > CONTENT_TOP + 0.5:
            self.y += 3
        width = (self.epw - gap * (len(items) - 1)) / len(items)
        for index, (label, value, ink) in enumerate(items):
            x = MARGIN + index * (width + gap)
            self.set_fill_color(*ZEBRA)
            self.set_draw_color(*RULE)
            self.rect(x, self.y, width, height, style="DF")
            self.set_fill_color(*ink)
            self.rect(x, self.y, 1.2, height, style="F")
            self.use(14, bold=True, ink=ink)
            self.text(x + 4, self.y + 8, self.fit(value, width - 6))
            self.use(7.5, ink=MUTED)
            self.text(x + 4, self.y + 13, self.fit(label, width - 6))
        self.y += height + 3

    def signature_lines(self, labels: Sequence[str]) -> None:
        """Blank lines for hand-written sign-off (e.g. 'Reviewed by', 'Date')."""
        self.ensure(16)
        self.y += 10
        width = (self.epw - 8 * (len(labels) - 1)) / len(labels)
        self.set_draw_color(*MUTED)
        self.use(7.5, ink=MUTED)
        for index, label in enumerate(labels):
            x = MARGIN + index * (width + 8)
            self.line(x, self.y, x + width, self.y)
            self.text(x, self.y + 3.5, label)
        self.y += 6
