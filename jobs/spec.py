"""Job kinds: each job function declares its kind and policy where it is defined."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from app.queues import policy_for
from jobs.backoff import Backoff

F = TypeVar("F", bound=Callable[..., Any])

#: Modules that declare the built-in job kinds; importing them fills the registry.
BUILTIN_MODULES: tuple[str, ...] = (
    "jobs.maintenance", "jobs.administrations", "jobs.webhooks", "jobs.alerts", "jobs.hl7_inbound", "jobs.hl7_outbound",
    "jobs.reports", "jobs.reminders", "jobs.backups", "jobs.audit", "jobs.privacy",
)


class UnknownJobKindError(LookupError):
    """A function or kind name that no job module declared."""


@dataclass(frozen=True)
class JobSpec:
    """A job kind: its function and how it runs (queue, timeout, attempts, backoff)."""

    kind: str
    func: Callable[..., Any]
    queue: str
    timeout: int
    max_attempts: int
    backoff: Backoff


_BY_KIND: dict[str, JobSpec] = {}
_BY_FUNC: dict[Callable[..., Any], JobSpec] = {}


def job_kind(
    kind: str,
    *,
    queue: str,
    timeout: int | None = None,
    max_attempts: int | None = None,
    backoff: Backoff | None = None,
) -> Callable[[F], F]:
    """Declare a job kind; unset options come from the queue's catalogue entry."""
    policy = policy_for(queue)

    def register(func: F) -> F:
        spec = JobSpec(
            kind=kind,
            func=func,
            queue=queue,
            timeout=timeout or policy.timeout,
            max_attempts=max_attempts or policy.max_attempts,
            backoff=backoff or policy.backoff,
        )
        existing = _BY_KIND.get(kind)
        if existing is not None and existing.func.__qualname__ != func.__qualname__:
            raise ValueError(f"job kind {kind!r} declared twice")
        _BY_KIND[kind] = spec
        _BY_FUNC[func] = spec
        return func

    return register


def spec_for(func_or_kind: Callable[..., Any] | str) -> JobSpec:
    """The spec of a declared job function or kind name."""
    table: dict[Any, JobSpec] = _BY_KIND if isinstance(func_or_kind, str) else _BY_FUNC
    try:
        return table[func_or_kind]
    except KeyError:
        name = func_or_kind if isinstance(func_or_kind, str) else getattr(func_or_kind, "__qualname__", "?")
        raise UnknownJobKindError(f"{name!r} is not a declared job kind") from None


def is_declared(kind: str) -> bool:
    """Whether some loaded job module declares this kind."""
    return kind in _BY_KIND


def load_job_modules(extra: Iterable[str] = ()) -> None:
    """Import the built-in job modules and any configured extras, registering their kinds."""
    for module in (*BUILTIN_MODULES, *extra):
        importlib.import_module(module)
