"""`triage worker`: keeps N worker processes running, recycles them, and drains them on SIGTERM.

Children run in their own session so that a signal sent to the whole process group (as some
process managers do) reaches only the supervisor, which forwards exactly one SIGTERM per signal
it receives: the first drains, the second interrupts the jobs in hand.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from workers.metrics import mark_process_dead
from workers.orphans import signal_when_orphaned

log = logging.getLogger(__name__)

#: Exit codes after which a child is replaced at once (recycle) rather than after a back-off.
_RECYCLE = 75


class Supervisor:
    """Runs `count` copies of a worker command and restarts them until told to stop."""

    def __init__(self, command: Sequence[str], count: int, *, burst: bool = False) -> None:
        self._command = list(command)
        self._count = count
        self._burst = burst
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False
        self._failures = 0

    def _spawn(self, slot: int) -> None:
        self._children[slot] = subprocess.Popen(
            self._command, start_new_session=True, preexec_fn=signal_when_orphaned  # noqa: PLW1509 - no threads here
        )
        log.info("Supervisor: worker %s started as pid %s", slot, self._children[slot].pid)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Supervise until every child has exited after a stop (or after a burst); return 0."""
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        for slot in range(self._count):
            self._spawn(slot)
        while self._children:
            time.sleep(0.2)
            for slot, child in list(self._children.items()):
                code = child.poll()
                if code is None:
                    continue
                del self._children[slot]
                mark_process_dead(child.pid)
                if self._stopping or (self._burst and code == 0):
                    continue
                self._restart(slot, code)
        return 0

    def _restart(self, slot: int, code: int) -> None:
        if code == _RECYCLE:
            log.info("Supervisor: worker %s recycled", slot)
        else:
            self._failures += 1
            pause = min(2 ** min(self._failures, 5), 30) / 2
            log.warning("Supervisor: worker %s exited with %s; restarting in %.1fs", slot, code, pause)
            time.sleep(pause)
            if self._stopping:  # told to stop while backing off
                return
        self._spawn(slot)


def supervise(child_args: Sequence[str], count: int, *, burst: bool) -> int:
    """Run `triage worker --child ARGS` `count` times over, supervised."""
    command = [sys.executable, "-m", "app.cli", "worker", "--child", *child_args]
    return Supervisor(command, count, burst=burst).run()
