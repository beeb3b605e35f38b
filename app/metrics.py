"""`/metrics` for Prometheus: HTTP metrics, job metrics from every process, queue state.

Mechanism: prometheus_client multiprocess mode with one directory per host. Operators set
`PROMETHEUS_MULTIPROC_DIR` to the same empty, writable directory for every Triage process on a
host (gunicorn, `triage worker`, `triage scheduler`) before those processes start (the client
library reads it at import), and empty it when they all start together, never while one of
them runs (a running process keeps writing to the file it has open). Each process writes its
counters and histograms to its own files there; this endpoint adds them up at scrape time.
Without the variable (development, most tests) only this process's registries are shown, so
job counters from worker processes are missing. There is no per-worker exporter port.

What is exposed:
- `flask_http_request_*` from prometheus-flask-exporter, grouped by URL rule (not path, which
  would make a series per job id); /metrics itself and the RQ dashboard are not tracked.
- `triage_jobs_*_total`, `triage_job_duration_seconds` (see workers/metrics.py).
- Read at scrape time from Redis and the ledger, so correct whichever host asks:
  `triage_queue_depth`, `triage_queue_oldest_job_age_seconds` (age of the next job to run),
  `triage_queue_scheduled` (retries waiting in RQ's scheduled registry), `triage_dead_letters`
  (ledger), `triage_queue_paused`, `triage_workers{state}` (RQ's worker registry) and
  `triage_metrics_source_up{source}` (0: Redis or the database did not answer; gauges left out).

Scraping needs an API key with the `metrics:read` (or `admin`) scope as a bearer token
(Prometheus `authorization: {credentials_file: ...}`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator

from flask import Flask, Response, request
from prometheus_client import REGISTRY, CollectorRegistry, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_flask_exporter import PrometheusMetrics
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job as RqJob
from rq.utils import as_text, utcparse
from rq.worker import WorkerStatus
from rq.worker_registration import get_keys
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from app.api.auth import requires
from app.models import Job, JobStatus
from app.queues import QUEUE_NAMES
from app.runtime import Runtime
from app.services import breakers
from app.services.operations import PAUSED_KEY
from workers.metrics import MULTIPROC_ENV

log = logging.getLogger(__name__)

SCOPE = "metrics:read"
#: Paths the HTTP metrics ignore (regular expressions matched at the start of the path).
UNTRACKED = (r"/metrics$", r"/admin/rq(/|$)")
WORKER_STATES = tuple(s.value for s in WorkerStatus)


def register_metrics(app: Flask) -> None:
    """Track HTTP requests and serve `/metrics` behind the `metrics:read` scope."""
    _check_mode()
    http = CollectorRegistry()  # per app: a second create_app in one process must not clash
    PrometheusMetrics(app, path=None, registry=http, group_by="url_rule", excluded_paths=list(UNTRACKED))
    state = StateCollector(app.extensions["triage"])

    @requires(SCOPE)
    def metrics() -> Response:
        body, content_type = _expose((http, REGISTRY), state, request.headers.get("Accept"))
        return Response(body, content_type=content_type)

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])


def _check_mode() -> None:
    """Fail at boot when the directory is set but metrics would not be written to it."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    if not os.path.isdir(directory):
        raise RuntimeError(f"{MULTIPROC_ENV}={directory!r} is not a directory")
    if not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError(f"{MULTIPROC_ENV} was set after prometheus_client was imported; set it before start")


def _expose(local: Iterable[CollectorRegistry], state: Collector, accept: str | None) -> tuple[bytes, str]:
    """The exposition: every process's files in multiprocess mode, else this process's registries."""
    registry = CollectorRegistry()
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        for source in local:
            registry.register(_Forward(source))
    registry.register(state)
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type


class _Forward(Collector):
    """Collect another registry's metrics (without re-registering its collectors)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


def _gauge(name: str, doc: str, label: str, samples: dict[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in samples.items():
        family.add_metric([key], value)
    return family


class StateCollector(Collector):
    """Queue depth, waiting age, retries, dead letters and workers, read when Prometheus asks."""

    def __init__(self, runtime: Runtime) -> None:
        self._redis = runtime.redis
        self._engine = runtime.engine
        self._settings = runtime.settings

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("triage_metrics_source_up", "1 if the source answered this scrape.", labels=["source"])
        try:
            families = queue_families(self._redis) + [worker_family(self._redis), self._breaker_family()]
            up.add_metric(["redis"], 1)
        except RedisError as exc:
            log.warning("Metrics: Redis unreachable (%s); queue and worker gauges left out", type(exc).__name__)
            families = []
            up.add_metric(["redis"], 0)
        try:
            families.append(dead_letter_family(self._engine))
            up.add_metric(["database"], 1)
        except SQLAlchemyError as exc:
            log.warning("Metrics: database unreachable (%s); dead letters left out", type(exc).__name__)
            up.add_metric(["database"], 0)
        yield from families
        yield up


    def _breaker_family(self) -> Metric:
        found = breakers.views(self._redis, fail_max=self._settings.breaker_fail_max,
                               reset_seconds=self._settings.breaker_reset_seconds)
        return _gauge("triage_circuit_breaker_state", "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
                      "name", {v.name: float(breakers.STATE_VALUES.get(v.state, 1)) for v in found})


def queue_families(redis: Redis) -> list[Metric]:
    """Depth, age of the next job, scheduled retries and pause of every catalogue queue (2 round trips).

    Not app.services.operations.queue_states: that counts registries through RQ's cleanup (side
    effects on every scrape) and costs several round trips per queue.
    """
    queues = [Queue(name, connection=redis) for name in QUEUE_NAMES]
    with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(queue.key)
            pipe.lindex(queue.key, 0)
            pipe.zcard(queue.scheduled_job_registry.key)
        pipe.smembers(PAUSED_KEY)
        *raw, paused_raw = pipe.execute()
    depth, head, scheduled = raw[0::3], raw[1::3], raw[2::3]
    paused = {as_text(name) for name in paused_raw}
    ages = _ages(redis, [as_text(job_id) if job_id else None for job_id in head])
    return [
        _gauge("triage_queue_depth", "Jobs waiting in the queue.", "queue", dict(zip(QUEUE_NAMES, depth, strict=True))),
        _gauge("triage_queue_oldest_job_age_seconds", "Seconds the next job to run has waited (0: empty).",
               "queue", dict(zip(QUEUE_NAMES, ages, strict=True))),
        _gauge("triage_queue_scheduled", "Retries waiting for their time in the scheduled registry.",
               "queue", dict(zip(QUEUE_NAMES, scheduled, strict=True))),
        _gauge("triage_queue_paused", "1 while operators have paused the queue (workers skip it).",
               "queue", {name: float(name in paused) for name in QUEUE_NAMES}),
    ]


def _ages(redis: Redis, job_ids: list[str | None]) -> list[float]:
    """Seconds since each job was enqueued (0 for no job, or a job whose hash is gone)."""
    present = [job_id for job_id in job_ids if job_id]
    with redis.pipeline(transaction=False) as pipe:
        for job_id in present:
            pipe.hget(RqJob.key_for(job_id), "enqueued_at")
        enqueued = dict(zip(present, pipe.execute(), strict=True))
    now = time.time()
    stamps = [enqueued.get(job_id) if job_id else None for job_id in job_ids]
    return [max(0.0, now - utcparse(as_text(at)).timestamp()) if at else 0.0 for at in stamps]


def worker_family(redis: Redis) -> Metric:
    """RQ workers registered in Redis, by state (idle, busy, suspended, started)."""
    keys = sorted(get_keys(connection=redis))
    with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(key, "state")
        states = Counter(as_text(s) for s in pipe.execute() if s)  # no hash: the worker expired
    counts: dict[str, float] = {state: 0 for state in WORKER_STATES}
    counts.update(states)
    return _gauge("triage_workers", "RQ workers registered in Redis, by state.", "state", counts)


def dead_letter_family(engine: Engine) -> Metric:
    """Dead jobs per queue according to the ledger (0 for catalogue queues without any)."""
    query = select(Job.queue, func.count()).where(Job.status == JobStatus.DEAD.value).group_by(Job.queue)
    with engine.connect() as conn:
        counts: dict[str, float] = {name: 0 for name in QUEUE_NAMES}
        counts.update({queue: count for queue, count in conn.execute(query)})
    return _gauge("triage_dead_letters", "Jobs in the dead letters (ledger status dead).", "queue", counts)
