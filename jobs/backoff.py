"""Retry delays: capped exponential backoff with full jitter, or a fixed schedule with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol


class Backoff(Protocol):
    """Seconds to wait before retry number `attempt` (1 = the first retry)."""

    def delay(self, attempt: int, rng: random.Random) -> float: ...


@dataclass(frozen=True)
class Exponential:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))] (AWS architecture blog)."""

    base: float
    cap: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        """A jittered delay that never exceeds the cap."""
        ceiling = min(self.cap, self.base * 2 ** max(attempt - 1, 0))
        return rng.uniform(0, ceiling)


@dataclass(frozen=True)
class Schedule:
    """Explicit delays per retry (the last one repeats), each moved by up to ±jitter of itself."""

    delays: tuple[float, ...]
    jitter: float = 0.1

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The scheduled delay for this retry, jittered."""
        base = self.delays[min(max(attempt - 1, 0), len(self.delays) - 1)]
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter)))
