"""PDF rendering: seconds and peak memory to render a medication administration log of N rows.

    .venv/bin/python bench/reports.py [--rows 5000] [--runs 3]

Renders the organisation-wide MAR (every row names its patient; a third of the rows blocked or
rejected with a reason) with app.reports.render, as the `reports.generate` job does after reading
the rows. Prints wall seconds, pages, PDF bytes, Python's peak allocation (tracemalloc) and the
process's peak RSS. No database or Redis: this measures the renderer.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.reports import render


def mar(rows: int) -> dict[str, Any]:
    """An organisation-wide log with `rows` attempts over a month."""
    start = datetime(2026, 11, 1, 8, 0)
    return {
        "period": {"from": "2026-11-01", "to": "2026-11-30"},
        "rows": [{"given_at": (start + timedelta(minutes=7 * n)).isoformat(),
                  "patient": {"name": f"José Müller {n % 300}", "identifier": f"MRN-{n % 300:05d}"},
                  "medication": "Amoxicillin 500 mg tablet", "dose": "500 mg", "route": "oral",
                  "status": ("recorded", "blocked", "rejected")[n % 3], "by": "Nurse Ünal",
                  "reason": "allergy: penicillin (severe)" if n % 3 == 1 else None} for n in range(rows)],
        "safety_events": [{"at": (start + timedelta(hours=n)).isoformat(), "type": "ALLERGY_BLOCKED",
                           "severity": "CRITICAL", "description": "Patient has a severe allergy to this medication."}
                          for n in range(rows // 100)],
    }


def main() -> None:
    """Render the log `--runs` times and print the figures of each run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data = mar(args.rows)
    for run in range(1, args.runs + 1):
        tracemalloc.start()
        started = time.perf_counter()
        rendered = render("medication_administration_log", data, organisation="Springfield Elementary",
                          generated_at=datetime.now(UTC))
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"run {run}: {args.rows} rows → {rendered.pages} pages, {len(rendered.pdf) / 2**20:.2f} MiB PDF in "
              f"{seconds:.2f} s; peak Python allocation {peak / 2**20:.1f} MiB; peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
