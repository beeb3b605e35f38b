"""Where the HL7 path's time goes, in-process: the listener's `take()` and the transform job.

    .venv/bin/python bench/profile_hl7.py [--messages 600] [--patients 100] [--batch 1] [--worker]
                                          [--cprofile /tmp/hl7]

Resets the bench targets (as bench/hl7.py does), then, in this one process, with no worker and
no socket: (1) takes `--messages` messages through `MllpListener.take_many`, `--batch` at a time
(store + ledger job + audit records, committed, ACKs built), (2) runs `jobs.hl7_inbound.transform_message`
on each stored message (claim/finish and RQ are not included), or with --worker through one burst
`TriageWorker` in this process (everything a worker does per job, but its ledger connection's
statements are not counted). The messages
are bench/hl7.py's: the AA fixture samples, unique MSH-10, `--patients` patient numbers.

Prints, per message and per part: wall ms, this process's CPU ms, SQL statements and the wall
ms spent inside them (cursor execute → result), and the CPU ms of the database's backends (psutil;
a worker's ledger backend counts too with --worker). With --cprofile PREFIX, writes PREFIX-take.prof
and PREFIX-transform.prof and prints the top functions by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import event, text

from bench.common import add_target_args, load_note, reset, runtime, target_from
from bench.hl7 import ENV, make_messages


def backend_cpu(rt: Any) -> float:
    """CPU seconds used so far by every PostgreSQL backend of the bench database (ours alone here)."""
    import psutil

    with rt.engine.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars()
        total = 0.0
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


class SqlMeter:
    """Counts statements on an engine and the wall time spent executing them."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.statements, self.seconds, self._started = 0, 0.0, 0.0
        event.listen(rt.engine, "before_cursor_execute", self._before)
        event.listen(rt.engine, "after_cursor_execute", self._after)

    def _before(self, *_: Any) -> None:
        self._started = time.perf_counter()

    def _after(self, *_: Any) -> None:
        self.statements += 1
        self.seconds += time.perf_counter() - self._started

    def snapshot(self) -> tuple[int, float]:
        """Statements and seconds so far."""
        return self.statements, self.seconds


def measure(label: str, items: list[Any], call: Callable[[Any], Any], meter: SqlMeter, prof: str | None,
            per: int = 0) -> None:
    """Run call(item) for each item and print the per-item figures (and a profile)."""
    profiler = cProfile.Profile() if prof else None
    pg0 = backend_cpu(meter.rt)
    sql0, wall0, cpu0 = meter.snapshot(), time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    for item in items:
        call(item)
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    pg = backend_cpu(meter.rt) - pg0
    statements, sql_seconds = (b - a for a, b in zip(sql0, meter.snapshot()))
    n = per or len(items)
    print(f"{label}: {n} messages, per message: wall {wall / n * 1000:.2f} ms, CPU {cpu / n * 1000:.2f} ms, "
          f"{statements / n:.1f} SQL statements taking {sql_seconds / n * 1000:.2f} ms wall, "
          f"PostgreSQL CPU {pg / n * 1000:.2f} ms"
          f"{' (cProfile on: inflated)' if profiler else ''}")
    if profiler and prof:
        path = f"{prof}-{label}.prof"
        profiler.dump_stats(path)
        stats = pstats.Stats(path)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(45)


def main() -> None:
    """Reset the bench targets, take the messages, transform them, print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_target_args(parser)
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--cprofile", default=None, help="file prefix for the profiles")
    parser.add_argument("--batch", type=int, default=1,
                        help="frames per take_many call, as the listener groups frames that arrive together")
    parser.add_argument("--worker", action="store_true",
                        help="transform through a burst TriageWorker in this process (claim, RQ, finish included)")
    args = parser.parse_args()
    target = target_from(args)
    rt = runtime(target, **ENV, TRIAGE_LOG_LEVEL="WARNING").use()
    organisation_id = reset(rt, target)
    with rt.engine.begin() as conn:
        conn.execute(text("TRUNCATE hl7_messages, fhir_resources, events RESTART IDENTITY CASCADE"))
        conn.execute(text("ANALYZE"))

    from app.mllp_frames import Frame
    from app.services import hl7_intake
    from jobs.hl7_inbound import transform_message
    from workers.mllp import MllpListener

    s = rt.settings
    policy = hl7_intake.Policy(max_bytes=s.hl7_max_bytes, duplicate_window_seconds=s.hl7_duplicate_window)
    listener = MllpListener(rt, organisation_id, policy, idle_timeout=60)
    messages = [Frame(raw, len(raw)) for _, raw in make_messages(args.messages, args.patients)]
    meter = SqlMeter(rt)
    print(f"{load_note()}")
    batches = [messages[i:i + args.batch] for i in range(0, len(messages), args.batch)]
    measure("take", batches, listener.take_many, meter, args.cprofile, per=len(messages))
    with rt.engine.connect() as conn:
        ids = list(conn.execute(text("SELECT id FROM hl7_messages WHERE status = 'accepted' ORDER BY id")).scalars())
    if args.worker:
        from workers.worker import TriageWorker

        def burst(_: Any) -> None:
            TriageWorker(["hl7.inbound"], runtime=rt).work(burst=True, with_scheduler=False, logging_level="WARNING")

        measure("worker", [None], burst, meter, args.cprofile, per=len(ids))
    else:
        measure("transform", ids, transform_message, meter, args.cprofile)
    with rt.engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT status, count(*) FROM hl7_messages GROUP BY status")).all())
    print(f"hl7_messages {counts}")
    rt.redis.flushdb()


if __name__ == "__main__":
    main()
