"""Throttled, monotonic progress reporting while a report is laid out."""

from __future__ import annotations

from collections.abc import Callable

#: Rows map onto 0..LAYOUT_SHARE; writing the file (font subsetting, compression) takes the rest.
LAYOUT_SHARE = 0.95
#: Smallest step between two reports: at most ~50 calls per report.
STEP = 0.02


class Progress:
    """Counts laid-out rows and calls `callback(fraction)` at most every `STEP`."""

    def __init__(self, callback: Callable[[float], None] | None) -> None:
        self._callback = callback
        self._total = 0
        self._done = 0
        self._last = -1.0

    def expect(self, rows: int) -> None:
        """Add `rows` to the number of rows this report will lay out."""
        self._total += rows

    def start(self) -> None:
        """Report 0.0."""
        self._emit(0.0)

    def tick(self) -> None:
        """Count one laid-out row; report when the fraction has moved by a step."""
        self._done += 1
        if self._total:
            fraction = LAYOUT_SHARE * min(self._done / self._total, 1.0)
            if fraction - self._last >= STEP:
                self._emit(fraction)

    def finish(self) -> None:
        """Report 1.0 once the file is written."""
        self._emit(1.0)

    def _emit(self, fraction: float) -> None:
        if self._callback is not None and fraction > self._last:
            self._callback(fraction)
        self._last = max(self._last, fraction)
