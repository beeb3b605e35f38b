"""Database backups: consistent pg_dump snapshots with checksums, restore, pruning and a restore drill.

A backup is three files in the backup folder: `triage-<UTC>.dump` (pg_dump custom format), its
`.sha256` sidecar (sha256sum format) and its `.json` manifest (row counts of the same snapshot).
The sidecars are written before the dump is renamed into place, so a visible dump is complete.
These functions manage their own connections: a backup is not part of anyone's unit of work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

#: A drill check: given an engine on the restored database, the problems it finds (none: fine).
Check = Callable[[Engine], list[str]]

_NAME = re.compile(r"^triage-(\d{8}T\d{6}Z)(?:-(\d+))?\.dump$")
_STAMP = "%Y%m%dT%H%M%SZ"
_STDERR_LIMIT = 2000
#: Leftovers of an interrupted backup (partial dump, orphan sidecars) older than this are swept.
_LEFTOVER_AGE = timedelta(days=1)
#: URL query parameters passed on to libpq through its environment variables.
_LIBPQ_QUERY_ENV = {
    "host": "PGHOST", "port": "PGPORT", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY", "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
}


class BackupError(RuntimeError):
    """A backup could not be taken, verified or restored."""


@dataclass(frozen=True)
class Backup:
    """One backup: the dump file, its checksum and size, and the row counts of its snapshot."""

    path: Path
    sha256: str
    size: int
    counts: dict[str, int]
    created_at: datetime
    database: str = ""
    pg_dump_version: str = ""


@dataclass(frozen=True)
class DrillResult:
    """What a restore drill found: the backup it restored (None: there was none) and the problems."""

    backup: Backup | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the drill found nothing wrong."""
        return not self.problems


def take(database_url: str, folder: Path, *, now: datetime | None = None) -> Backup:
    """Dump the database into `folder`, with row counts and pg_dump from one snapshot."""
    url = make_url(database_url)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    created_at = (now or datetime.now(UTC)).astimezone(UTC)
    final, partial = _reserve(folder, created_at)
    try:
        with _engine(url) as engine, engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                snapshot = str(conn.execute(text("SELECT pg_export_snapshot()")).scalar_one())
                counts = _count_rows(conn)
                pg_dump = _binary("pg_dump", _server_version(conn))
                # The transaction stays open while pg_dump runs: the exported snapshot lives as long as it.
                _run([pg_dump, "--format=custom", f"--snapshot={snapshot}", f"--file={partial}"], url)
        manifest = {"database": url.database or "", "counts": counts, "pg_dump_version": _version(pg_dump)}
        backup = seal(partial, final, created_at, manifest)
    finally:
        partial.unlink(missing_ok=True)
    log.info("Backup %s: %s bytes, %s tables", backup.path.name, backup.size, len(counts))
    return backup


def seal(partial: Path, final: Path, created_at: datetime, manifest: Mapping[str, Any]) -> Backup:
    """Checksum a finished dump, write its sidecars, then move it into place under its final name."""
    digest, size = _sha256(partial)
    full = {**manifest, "file": final.name, "sha256": digest, "size": size, "created_at": created_at.isoformat()}
    _write_atomic(_sidecar(final, ".json"), json.dumps(full, indent=2, sort_keys=True) + "\n")
    _write_atomic(_sidecar(final, ".sha256"), f"{digest}  {final.name}\n")
    _fsync(partial)
    os.replace(partial, final)
    _fsync(final.parent)
    return load(final)


def backup_name(created_at: datetime, serial: int = 0) -> str:
    """The file name of a backup taken at `created_at` (UTC), e.g. `triage-20261202T031500Z.dump`."""
    stamp = created_at.astimezone(UTC).strftime(_STAMP)
    return f"triage-{stamp}.dump" if serial == 0 else f"triage-{stamp}-{serial}.dump"


def load(path: Path) -> Backup:
    """A backup as its manifest describes it (the checksum is not recomputed: see `verify`)."""
    try:
        manifest = json.loads(_sidecar(path, ".json").read_text())
        return Backup(
            path=path, sha256=str(manifest["sha256"]), size=int(manifest["size"]),
            counts={str(k): int(v) for k, v in manifest["counts"].items()},
            created_at=datetime.fromisoformat(manifest["created_at"]), database=str(manifest.get("database", "")),
            pg_dump_version=str(manifest.get("pg_dump_version", "")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"{path.name}: unreadable manifest ({type(exc).__name__}: {exc})") from exc


def verify(path: Path) -> Backup:
    """Recompute the dump's SHA-256 and compare it with its sidecar; BackupError on any mismatch."""
    try:
        recorded = _sidecar(path, ".sha256").read_text().split()[0]
    except (OSError, IndexError) as exc:
        raise BackupError(f"{path.name}: no readable checksum sidecar") from exc
    actual, _ = _sha256(path)
    if actual != recorded:
        raise BackupError(f"{path.name}: checksum mismatch (expected {recorded}, got {actual})")
    backup = load(path)
    if backup.sha256 != actual:
        raise BackupError(f"{path.name}: manifest checksum does not match the file")
    return backup


def list_backups(folder: Path) -> list[Backup]:
    """The backups in `folder`, oldest first; a dump without a readable manifest is skipped (and logged)."""
    found = []
    for path in sorted(folder.glob("triage-*.dump")) if folder.is_dir() else []:
        if not _NAME.match(path.name):
            continue
        try:
            found.append(load(path))
        except BackupError as exc:
            log.warning("Backup %s: skipped (%s)", path.name, exc)
    return sorted(found, key=lambda b: (b.created_at, b.path.name))


def prune(folder: Path, older_than_days: int, now: datetime) -> list[Path]:
    """Remove backups created more than `older_than_days` before `now`, never the newest one."""
    cutoff = now - timedelta(days=older_than_days)
    removed = []
    for backup in list_backups(folder)[:-1]:
        if backup.created_at < cutoff:
            for path in (backup.path, _sidecar(backup.path, ".sha256"), _sidecar(backup.path, ".json")):
                path.unlink(missing_ok=True)
            removed.append(backup.path)
            log.info("Backup %s: pruned (older than %s days)", backup.path.name, older_than_days)
    _sweep_leftovers(folder, now)
    return removed


def restore(path: Path, target_database_url: str, *, force: bool = False) -> str | None:
    """Verify `path`, then restore it into a new database; returns where a replaced database was moved.

    An existing empty target is used; a non-empty one is refused unless `force`, which renames it
    aside (`<name>_before_<UTC>`, nothing deleted) and restores into a fresh database of that name.
    """
    verify(path)
    url = make_url(target_database_url)
    name = _require_name(url)
    with _engine(url.set(database="postgres")) as admin, admin.connect() as conn:
        exists = _database_exists(conn, name)
        moved_to = None
        if exists and not _is_empty(url):
            if not force:
                raise BackupError(f"database {name!r} exists and is not empty (force moves it aside)")
            moved_to = _move_aside(conn, url)
        created = moved_to is not None or not exists
        if created:
            _ddl(conn, f"CREATE DATABASE {_quote(name)}")
        try:
            _restore_into(path, url)
        except BackupError:
            if created:  # ours, and left empty by the single-transaction restore
                _ddl(conn, f"DROP DATABASE IF EXISTS {_quote(name)}")
            if moved_to:
                _ddl(conn, f"ALTER DATABASE {_quote(moved_to)} RENAME TO {_quote(name)}")
            raise
    log.info("Backup %s: restored into database %s", path.name, name)
    return moved_to


def drill(folder: Path, database_url: str, scratch_database: str, checks: Sequence[Check] = ()) -> DrillResult:
    """Restore the latest backup into a scratch database, compare row counts, run `checks`, drop it."""
    url = make_url(database_url)
    if scratch_database == url.database:
        raise BackupError("the drill's scratch database must not be the live database")
    found = list_backups(folder)
    if not found:
        return DrillResult(None, [f"no backup in {folder}"])
    latest = found[-1]
    scratch = url.set(database=scratch_database)
    drop_database(database_url, scratch_database)
    try:
        try:
            restore(latest.path, scratch.render_as_string(hide_password=False))
        except BackupError as exc:
            return DrillResult(latest, [f"restore failed: {exc}"])
        problems = _check(scratch, latest, checks)
    finally:
        drop_database(database_url, scratch_database)
    log.info("Backup %s: restore drill found %s problem(s)", latest.path.name, len(problems))
    return DrillResult(latest, problems)


def drop_database(database_url: str, name: str) -> None:
    """Drop database `name` on the server of `database_url` if it exists (scratch databases, tests)."""
    with _engine(make_url(database_url).set(database="postgres")) as admin, admin.connect() as conn:
        _ddl(conn, f"DROP DATABASE IF EXISTS {_quote(name)}")


def compare_counts(expected: Mapping[str, int], actual: Mapping[str, int]) -> list[str]:
    """Differences between the manifest's row counts and the restored database's, one line each."""
    problems = [f"table {t}: missing after restore" for t in sorted(expected.keys() - actual.keys())]
    problems += [f"table {t}: not in the backup's manifest" for t in sorted(actual.keys() - expected.keys())]
    for table in sorted(expected.keys() & actual.keys()):
        if expected[table] != actual[table]:
            problems.append(f"table {table}: {actual[table]} rows restored, {expected[table]} in the manifest")
    return problems


def libpq_env(url: URL, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a libpq tool reaching `url`: the password travels here, never in argv."""
    env = dict(os.environ if base is None else base)
    given = {"PGHOST": url.host, "PGPORT": str(url.port) if url.port else None, "PGUSER": url.username,
             "PGPASSWORD": url.password, "PGDATABASE": url.database}
    for key, value in url.query.items():
        if key in _LIBPQ_QUERY_ENV:
            given[_LIBPQ_QUERY_ENV[key]] = value if isinstance(value, str) else value[0]
    env.update({k: str(v) for k, v in given.items() if v})
    return env


def _check(scratch: URL, backup: Backup, checks: Sequence[Check]) -> list[str]:
    """Row counts against the manifest, then every check, on the restored scratch database."""
    with _engine(scratch) as engine:
        with engine.connect() as conn:
            problems = compare_counts(backup.counts, _count_rows(conn))
        for check in checks:
            problems += check(engine)
    return problems


def _move_aside(conn: Connection, url: URL) -> str:
    """Rename the target database out of the way (it must have no open connections); its new name."""
    name = _require_name(url)
    moved_to = f"{name}_before_{datetime.now(UTC).strftime(_STAMP)}"
    _ddl(conn, f"ALTER DATABASE {_quote(name)} RENAME TO {_quote(moved_to)}")
    log.warning("Restore: database %s moved aside to %s", name, moved_to)
    return moved_to


def _restore_into(path: Path, url: URL) -> None:
    """pg_restore into an existing, empty database, all or nothing."""
    with _engine(url) as engine, engine.connect() as conn:
        pg_restore = _binary("pg_restore", _server_version(conn))
    _run([pg_restore, "--no-owner", "--exit-on-error", "--single-transaction", f"--dbname={url.database}",
          str(path)], url)


def _is_empty(url: URL) -> bool:
    """Whether a database holds no relations outside the system schemas."""
    query = ("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
             " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'")
    with _engine(url) as engine, engine.connect() as conn:
        return int(conn.execute(text(query)).scalar_one()) == 0


def _count_rows(conn: Connection) -> dict[str, int]:
    """Exact row counts of every table in the public schema, as this connection's snapshot sees them."""
    tables: list[str] = list(conn.execute(text(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY c.relname"
    )).scalars())
    return {t: int(conn.execute(text(f"SELECT count(*) FROM public.{_quote(t)}")).scalar_one()) for t in tables}


def _server_version(conn: Connection) -> int:
    """The server's version as a number (150020 for 15.20)."""
    return int(conn.execute(text("SHOW server_version_num")).scalar_one())


def _binary(tool: str, server_version_num: int) -> str:
    """The tool of the server's major version (Debian keeps one per version), else the one on PATH."""
    debian = Path(f"/usr/lib/postgresql/{server_version_num // 10000}/bin/{tool}")
    if debian.is_file() and os.access(debian, os.X_OK):
        return str(debian)
    found = shutil.which(tool)
    if found is None:
        raise BackupError(f"{tool} not found (install the PostgreSQL client of the server's version)")
    return found


def _version(binary: str) -> str:
    """What `binary --version` says, e.g. `pg_dump (PostgreSQL) 15.20`."""
    return subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout.strip()


def _run(argv: list[str], url: URL) -> None:
    """Run a PostgreSQL client tool against `url`; BackupError with its (truncated) stderr on failure."""
    done = subprocess.run(argv, env=libpq_env(url), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        stderr = done.stderr.strip()
        if len(stderr) > _STDERR_LIMIT:
            stderr = stderr[:_STDERR_LIMIT] + " …"
        raise BackupError(f"{Path(argv[0]).name} failed (exit {done.returncode}): {stderr}")


def _reserve(folder: Path, created_at: datetime) -> tuple[Path, Path]:
    """A free final name and its partial file, created exclusively (readable by the owner only)."""
    for serial in range(100):
        final = folder / backup_name(created_at, serial)
        partial = folder / f".{final.name}.partial"
        if final.exists():
            continue
        try:
            os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            continue
        return final, partial
    raise BackupError(f"no free backup name for {created_at.isoformat()} in {folder}")


def _sweep_leftovers(folder: Path, now: datetime) -> None:
    """Remove partial dumps and sidecars without a dump left by interrupted backups (after a day)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name.startswith(".triage-") and path.name.endswith(".partial"):
            stray = True
        elif path.name.startswith("triage-") and path.suffix in (".json", ".sha256"):
            stray = not path.with_suffix(".dump").exists()
        else:
            continue
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        if stray and now - modified > _LEFTOVER_AGE:
            path.unlink(missing_ok=True)
            log.info("Backup folder: removed leftover %s", path.name)


def _sidecar(dump: Path, suffix: str) -> Path:
    return dump.with_suffix(suffix)


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _write_atomic(path: Path, content: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ddl(conn: Connection, statement: str) -> None:
    conn.execute(text(statement))


def _database_exists(conn: Connection, name: str) -> bool:
    return conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is not None


def _require_name(url: URL) -> str:
    if not url.database:
        raise BackupError("the target URL names no database")
    return url.database


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@contextmanager
def _engine(url: URL) -> Iterator[Engine]:
    """A short-lived engine without a pool; administrative statements run in autocommit."""
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT", hide_parameters=True)
    try:
        yield engine
    finally:
        engine.dispose()
