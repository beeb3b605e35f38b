"""Settings: the one place that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


class SettingsError(RuntimeError):
    """A required setting is missing or malformed."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _pairs(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    """`a=x,b=y` as ((a, x), (b, y))."""
    pairs = []
    for item in (i.strip() for i in env.get(name, "").split(",") if i.strip()):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SettingsError(f"{name}: {item!r} is not name=value")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def _int_at_least(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = _int(env, name, default)
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _sqlalchemy_url(url: str) -> str:
    """Pin the psycopg2 driver: SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql:// URL."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise SettingsError(f"{name} is required")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything a Triage process needs to know, read once at boot."""

    database_url: str = field(repr=False)  # may carry a password
    redis_url: str = field(repr=False)
    # Extra modules that declare job kinds (plug-ins, test kinds), imported by every process.
    job_modules: tuple[str, ...] = ()
    # Seconds a draining worker lets the job in hand run before putting it back on its queue.
    drain_seconds: float = 3.0
    # A worker's liveness lease: refreshed every lease_seconds / 4, lost after lease_seconds.
    lease_seconds: float = 6.0
    # How often the scheduler process runs the reconciler, and how old a ledger row must be
    # before the reconciler treats its absence from Redis as a loss.
    reconcile_interval: float = 2.0
    reconcile_grace: float = 10.0
    # Worker process recycling: exit (and be restarted by the supervisor) after this many jobs
    # or once resident memory passes this many MiB. 0 disables.
    worker_max_jobs: int = 0
    worker_max_memory_mb: int = 300
    # Grace past a job's own timeout before the watchdog kills a job that ignores the timeout.
    hard_kill_grace: float = 10.0
    # Failed (dead) jobs stay visible in RQ's failed registry this long; the ledger keeps them forever.
    failure_ttl: int = 30 * 24 * 3600
    log_level: str = "INFO"

    # API: requests per API key, per IP without one (flask-limiter notation), and body size.
    rate_limit: str = "1200 per minute"
    anonymous_rate_limit: str = "120 per minute"
    max_body_bytes: int = 1024 * 1024
    # Reverse proxies in front of the API that set X-Forwarded-For/-Proto (0: none, trust no header):
    # audit records, rate limits and logs then see the client's address, not the balancer's.
    proxy_hops: int = 0
    # Medication safety: a dose further than this fraction from the prescribed one is blocked, and a
    # second dose of one prescription within this many minutes (unless the prescription sets its own).
    dose_tolerance: float = 0.05
    duplicate_window_minutes: int = 60
    # Webhooks: attempt timeout; an endpoint failing without a success this long is disabled; how long
    # a rotated-out signing secret still signs. Outbound HTTP may use plain http:// and loopback
    # addresses only with egress_allow_loopback (development and tests; never in production).
    webhook_timeout: float = 15.0
    webhook_disable_after: float = 5 * 24 * 3600.0
    webhook_secret_overlap: float = 24 * 3600.0
    egress_allow_loopback: bool = False
    # Circuit breakers (per webhook endpoint and alert channel, shared through Redis): consecutive
    # failures that open one, and seconds before it lets a trial call through (half-open).
    breaker_fail_max: int = 5
    breaker_reset_seconds: float = 60.0
    # Alerts (checked by the scheduler every alert_interval s): dead letters at or past this count,
    # a queue's oldest waiting job older than this many seconds.
    alert_interval: float = 10.0
    alert_dead_letters: int = 100
    alert_queue_age: float = 300.0
    # HL7 v2: the MLLP listener's address and TLS (certificate and key files; both or neither), the
    # organisation its messages belong to and the senders it takes (MSH-4 or MSH-3^MSH-4; empty: any),
    # the largest message, idle connection timeout, the window in which a repeated sender + MSH-10
    # gets the original ACK, and whether unsupported types are rejected (AR) instead of stored (AA).
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575
    mllp_tls_cert: str | None = None
    mllp_tls_key: str | None = None
    mllp_organisation: str = "mllp"
    mllp_allowed_senders: frozenset[str] = frozenset()
    mllp_idle_timeout: float = 300.0
    mllp_max_connections: int = 500
    hl7_max_bytes: int = 10 * 1024 * 1024
    hl7_duplicate_window: float = 24 * 3600.0
    hl7_reject_unsupported: bool = False
    # Outbound HL7: named MLLP destinations ("lab=host:port,ris=tls://host:port") and the seconds an
    # ACK may take to arrive.
    hl7_destinations: tuple[tuple[str, str], ...] = ()
    hl7_ack_timeout: float = 30.0
    # Inventory maintenance announces lots expiring within this many days.
    inventory_expiring_days: int = 30
    # Generated PDF reports are kept this many days, then pruned.
    report_retention_days: int = 30
    # Days operational rows are kept before the daily retention job removes them (7 at least):
    # succeeded/cancelled ledger jobs, processed raw HL7 and sent outbound HL7, webhook attempts.
    ledger_retention_days: int = 30
    hl7_retention_days: int = 90
    webhook_attempt_retention_days: int = 30
    # Audit records stay in the hot table at least this many days (never fewer than 90: the database
    # refuses to delete younger ones), then go to one compressed, checksummed file per chain and day
    # in the archive folder (relative to the working directory unless absolute).
    audit_retention_days: int = 90
    audit_archive_folder: str = "var/audit-archive"
    # Database backups (`triage backup`, daily): the folder they are written to (relative to the
    # working directory unless absolute) and the days they are kept (the newest is always kept).
    backup_folder: str = "var/backups"
    backup_retention_days: int = 30
    # Signs the operators' dashboard session cookie; the web process refuses to start without it.
    secret_key: str | None = field(default=None, repr=False)
    # Fernet keys (comma-separated; the first encrypts, all decrypt) for secrets stored in PostgreSQL.
    encryption_keys: tuple[str, ...] = field(default=(), repr=False)

    def require_encryption_keys(self) -> tuple[str, ...]:
        """The keys for secrets at rest; processes that store or use signing secrets need them."""
        if not self.encryption_keys:
            raise SettingsError("TRIAGE_ENCRYPTION_KEYS is required (generate one: triage keys generate)")
        return self.encryption_keys

    def require_secret_key(self) -> str:
        """The session-signing key; the API fails at boot without a strong one."""
        if not self.secret_key or len(self.secret_key) < 32:
            raise SettingsError("TRIAGE_SECRET_KEY is required (32+ random characters)")
        return self.secret_key

    @staticmethod
    def database_url_from_env(env: Mapping[str, str] | None = None) -> str:
        """Only the database URL (migrations need nothing else)."""
        return _sqlalchemy_url(_required(os.environ if env is None else env, "DATABASE_URL"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment; fail at boot on a missing required value."""
        env = os.environ if env is None else env
        modules = tuple(m.strip() for m in env.get("TRIAGE_JOB_MODULES", "").split(",") if m.strip())
        return cls(
            database_url=_sqlalchemy_url(_required(env, "DATABASE_URL")),
            redis_url=_required(env, "REDIS_URL"),
            job_modules=modules,
            drain_seconds=_float(env, "TRIAGE_DRAIN_SECONDS", 3.0),
            lease_seconds=_float(env, "TRIAGE_LEASE_SECONDS", 6.0),
            reconcile_interval=_float(env, "TRIAGE_RECONCILE_INTERVAL", 2.0),
            reconcile_grace=_float(env, "TRIAGE_RECONCILE_GRACE", 10.0),
            worker_max_jobs=_int(env, "TRIAGE_WORKER_MAX_JOBS", 0),
            worker_max_memory_mb=_int(env, "TRIAGE_WORKER_MAX_MEMORY_MB", 300),
            hard_kill_grace=_float(env, "TRIAGE_HARD_KILL_GRACE", 10.0),
            failure_ttl=_int(env, "TRIAGE_FAILURE_TTL", 30 * 24 * 3600),
            log_level=env.get("TRIAGE_LOG_LEVEL", "INFO").upper(),
            rate_limit=env.get("TRIAGE_RATE_LIMIT") or "1200 per minute",
            anonymous_rate_limit=env.get("TRIAGE_ANONYMOUS_RATE_LIMIT") or "120 per minute",
            max_body_bytes=_int(env, "TRIAGE_MAX_BODY_BYTES", 1024 * 1024),
            proxy_hops=_int_at_least(env, "TRIAGE_PROXY_HOPS", 0, 0),
            dose_tolerance=_float(env, "TRIAGE_DOSE_TOLERANCE", 0.05),
            duplicate_window_minutes=_int(env, "TRIAGE_DUPLICATE_WINDOW_MINUTES", 60),
            webhook_timeout=_float(env, "TRIAGE_WEBHOOK_TIMEOUT", 15.0),
            webhook_disable_after=_float(env, "TRIAGE_WEBHOOK_DISABLE_AFTER", 5 * 24 * 3600.0),
            webhook_secret_overlap=_float(env, "TRIAGE_WEBHOOK_SECRET_OVERLAP", 24 * 3600.0),
            egress_allow_loopback=_bool(env, "TRIAGE_EGRESS_ALLOW_LOOPBACK"),
            breaker_fail_max=_int(env, "TRIAGE_BREAKER_FAIL_MAX", 5),
            breaker_reset_seconds=_float(env, "TRIAGE_BREAKER_RESET_SECONDS", 60.0),
            alert_interval=_float(env, "TRIAGE_ALERT_INTERVAL", 10.0),
            alert_dead_letters=_int(env, "TRIAGE_ALERT_DEAD_LETTERS", 100),
            alert_queue_age=_float(env, "TRIAGE_ALERT_QUEUE_AGE", 300.0),
            mllp_host=env.get("TRIAGE_MLLP_HOST") or "127.0.0.1",
            mllp_port=_int(env, "TRIAGE_MLLP_PORT", 2575),
            mllp_tls_cert=env.get("TRIAGE_MLLP_TLS_CERT") or None,
            mllp_tls_key=env.get("TRIAGE_MLLP_TLS_KEY") or None,
            mllp_organisation=env.get("TRIAGE_MLLP_ORGANISATION") or "mllp",
            mllp_allowed_senders=frozenset(s.strip() for s in env.get("TRIAGE_MLLP_ALLOWED_SENDERS", "").split(",")
                                           if s.strip()),
            mllp_idle_timeout=_float(env, "TRIAGE_MLLP_IDLE_TIMEOUT", 300.0),
            mllp_max_connections=_int(env, "TRIAGE_MLLP_MAX_CONNECTIONS", 500),
            hl7_max_bytes=_int(env, "TRIAGE_HL7_MAX_BYTES", 10 * 1024 * 1024),
            hl7_duplicate_window=_float(env, "TRIAGE_HL7_DUPLICATE_WINDOW", 24 * 3600.0),
            hl7_reject_unsupported=_bool(env, "TRIAGE_HL7_REJECT_UNSUPPORTED"),
            hl7_destinations=_pairs(env, "TRIAGE_HL7_DESTINATIONS"),
            hl7_ack_timeout=_float(env, "TRIAGE_HL7_ACK_TIMEOUT", 30.0),
            report_retention_days=_int(env, "TRIAGE_REPORT_RETENTION_DAYS", 30),
            ledger_retention_days=_int_at_least(env, "TRIAGE_LEDGER_RETENTION_DAYS", 30, 7),
            hl7_retention_days=_int_at_least(env, "TRIAGE_HL7_RETENTION_DAYS", 90, 7),
            webhook_attempt_retention_days=_int_at_least(env, "TRIAGE_WEBHOOK_ATTEMPT_RETENTION_DAYS", 30, 7),
            audit_retention_days=_int_at_least(env, "TRIAGE_AUDIT_RETENTION_DAYS", 90, 90),
            audit_archive_folder=env.get("TRIAGE_AUDIT_ARCHIVE_FOLDER") or "var/audit-archive",
            inventory_expiring_days=_int(env, "TRIAGE_INVENTORY_EXPIRING_DAYS", 30),
            backup_folder=env.get("TRIAGE_BACKUP_FOLDER") or "var/backups",
            backup_retention_days=_int(env, "TRIAGE_BACKUP_RETENTION_DAYS", 30),
            secret_key=env.get("TRIAGE_SECRET_KEY") or None,
            encryption_keys=tuple(k.strip() for k in env.get("TRIAGE_ENCRYPTION_KEYS", "").split(",") if k.strip()),
        )
