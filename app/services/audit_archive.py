"""Audit retention: whole UTC days past the retention are archived to files, then removed from the hot table.

An archive is `<folder>/<chain>/<YYYY-MM-DD>.jsonl.gz`: one JSON object per record (every column;
occurred_at as ISO 8601 UTC with milliseconds), in seq order, gzip with no timestamp so a rerun
writes the same bytes; `<file>.sha256` beside it holds its checksum (sha256sum format). The
`audit_archives` row keeps the path (relative to the folder), checksum, seq range and the day's
head hash (its last record's hash), which the first hot record's prev_hash must equal.

A chain under an active legal hold (its organisation's, or a platform-wide one) is not archived.
PostgreSQL refuses to delete any record that is not archived, is younger than 90 days, or is held,
whatever this module does. Archiving is itself audited (`audit.archive`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from app.models import AuditArchive, AuditChainHead, AuditEvent, LegalHold
from app.services import audit
from app.services.audit import AuditEntry, Break, ChainCheck, VerifyResult

log = logging.getLogger(__name__)

#: The shortest retention allowed (the database's DELETE trigger enforces the same floor).
MIN_RETENTION_DAYS = 90


class ArchiveError(RuntimeError):
    """A day that cannot be archived: its records do not form a valid chain."""


class HoldNotFoundError(LookupError):
    """No active legal hold with this id."""


def _organisation(chain: int) -> int | None:
    return chain or None


def is_held(session: Session, organisation_id: int | None) -> bool:
    """Whether an active legal hold covers this organisation's records (None: platform-level records)."""
    scope: ColumnElement[bool] = LegalHold.organisation_id.is_(None)
    if organisation_id is not None:
        scope = or_(scope, LegalHold.organisation_id == organisation_id)
    return bool(session.scalar(select(exists().where(LegalHold.released_at.is_(None), scope))))


def archive(session: Session, folder: Path, today: date, retention_days: int, *, actor_id: str | None = None,
            job_id: int | None = None, max_days: int | None = None) -> list[AuditArchive]:
    """Archive, then remove, each chain's whole UTC days older than the retention (at most `max_days`)."""
    if retention_days < MIN_RETENTION_DAYS:
        raise ValueError(f"audit retention must be at least {MIN_RETENTION_DAYS} days, got {retention_days}")
    cutoff = today - timedelta(days=retention_days)
    done: list[AuditArchive] = []
    for chain in session.scalars(select(AuditChainHead.chain).order_by(AuditChainHead.chain)).all():
        # one archiver per chain at a time (the scheduled job and a CLI run may overlap)
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"audit-archive:{chain}", 0))))
        if is_held(session, _organisation(chain)):
            log.info("Audit chain %s: under a legal hold, not archived", chain)
            continue
        while (max_days is None or len(done) < max_days) \
                and (made := _archive_first_day(session, folder, chain, cutoff)) is not None:
            done.append(made)
            audit.record(session, AuditEntry("audit.archive", "success", "system", actor_id, _organisation(chain),
                                             resource_type="audit_archive", resource_id=str(made.id), job_id=job_id))
    return done


def _archive_first_day(session: Session, folder: Path, chain: int, cutoff: date) -> AuditArchive | None:
    """Archive and remove the chain's oldest hot day if it is before `cutoff`; None when there is none."""
    first = session.execute(select(AuditEvent.seq, AuditEvent.occurred_at).where(AuditEvent.chain == chain)
                            .order_by(AuditEvent.seq).limit(1)).one_or_none()
    if first is None or first.occurred_at.astimezone(UTC).date() >= cutoff:
        return None
    day = first.occurred_at.astimezone(UTC).date()
    if session.scalar(select(AuditArchive.id).where(AuditArchive.chain == chain, AuditArchive.day == day)):
        # Never overwrite the file of an archived day (only a clock stepping back could get here).
        raise ArchiveError(f"audit chain {chain}: {day} is archived already but seq {first.seq} is of that day")
    relative = f"{chain}/{day.isoformat()}.jsonl.gz"
    check = ChainCheck(chain, *audit.archived_end(session, chain))
    start = check.next_seq
    count, sha256 = _write(folder / relative, _day_rows(session, chain, first.seq - 1, day), check)
    made = AuditArchive(chain=chain, day=day, path=relative, sha256=sha256, record_count=count, first_seq=start,
                        last_seq=check.next_seq - 1, head_hash=check.prev_hash)
    session.add(made)
    session.flush()
    removed = session.execute(delete(AuditEvent).where(AuditEvent.chain == chain,
                                                       AuditEvent.seq.between(made.first_seq, made.last_seq)))
    if removed.rowcount != count:  # type: ignore[attr-defined]
        raise ArchiveError(f"audit chain {chain}: {count} records archived for {day} but {removed.rowcount} removed")  # type: ignore[attr-defined]
    log.info("Audit chain %s: %s records of %s archived to %s", chain, count, day, relative)
    return made


def _day_rows(session: Session, chain: int, after: int, day: date) -> Iterator[Any]:
    """The chain's records from seq `after` on, until the first one on a later UTC day than `day`."""
    end = datetime.combine(day + timedelta(days=1), time(), UTC)
    for rows in audit.batches(session, chain, after, None, audit.BATCH):
        for row in rows:
            if row["occurred_at"] >= end:
                return
            yield row


def _json(row: Any) -> str:
    values = {name: row[name] for name in audit.COLUMNS}
    values["occurred_at"] = row["occurred_at"].astimezone(UTC).isoformat(timespec="milliseconds")
    return json.dumps(values, separators=(",", ":"))


def _write(path: Path, rows: Iterator[Any], check: ChainCheck) -> tuple[int, str]:
    """Write the rows (each checked against the chain) to `path` atomically; (count, sha256)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = 0
    try:
        with open(partial, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
                for row in rows:
                    found = check.check(row)
                    if found is not None:
                        raise ArchiveError(f"audit chain {found.chain}: {found.problem} at seq {found.seq}; "
                                           "not archived")
                    out.write(_json(row).encode() + b"\n")
                    count += 1
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    sha256 = file_sha256(path)
    path.with_name(path.name + ".sha256").write_text(f"{sha256}  {path.name}\n")
    return count, sha256


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            row["occurred_at"] = datetime.fromisoformat(row["occurred_at"])
            yield row


def _check_file(path: Path, sha256: str, chain: int, check: ChainCheck | None) -> tuple[VerifyResult, ChainCheck | None]:
    """Checksum, then every record against the chain (from `check`, or from the file's own first record)."""
    if file_sha256(path) != sha256:
        return VerifyResult(False, 0, Break(chain, 0, None, "checksum mismatch", str(path))), check
    count = 0
    try:
        for row in _read(path):
            check = check or ChainCheck(row["chain"], row["seq"], row["prev_hash"])
            found = check.check(row)
            if found is not None:
                return VerifyResult(False, count, found), check
            count += 1
    except (OSError, EOFError, ValueError, KeyError, TypeError, zlib.error) as exc:
        return VerifyResult(False, count, Break(chain, 0, None, "unreadable", f"{path}: {type(exc).__name__}")), check
    return VerifyResult(True, count, None), check


def verify_archive(path: Path, sha256: str | None = None) -> VerifyResult:
    """Re-read an archive file: its checksum (given, or its .sha256 sidecar) and its internal chain."""
    expected = sha256 or path.with_name(path.name + ".sha256").read_text().split()[0]
    chain = int(path.parent.name) if path.parent.name.isdigit() else -1
    return _check_file(path, expected, chain, None)[0]


def verify_archives(session: Session, folder: Path) -> VerifyResult:
    """Check every archive file against its audit_archives row, each day linked to the one before."""
    checked = 0
    starts: dict[int, tuple[int, str]] = {}
    for made in session.scalars(select(AuditArchive).order_by(AuditArchive.chain, AuditArchive.first_seq)):
        check = ChainCheck(made.chain, *starts.get(made.chain, (1, audit.GENESIS_HASH)))
        path = folder / made.path
        if not path.exists():
            return VerifyResult(False, checked, Break(made.chain, made.first_seq, None, "archive missing", made.path))
        result, _ = _check_file(path, made.sha256, made.chain, check)
        checked += result.records_checked
        if result.first_break is not None:
            return VerifyResult(False, checked, result.first_break)
        if (check.next_seq - 1, check.prev_hash) != (made.last_seq, made.head_hash):
            return VerifyResult(False, checked, Break(made.chain, made.last_seq, None, "head mismatch", made.path))
        starts[made.chain] = (made.last_seq + 1, made.head_hash)
    return VerifyResult(True, checked, None)


def place_hold(session: Session, *, organisation_id: int | None, reason: str, actor_id: str,
               actor_type: str = "operator") -> LegalHold:
    """Stop archiving and removing an organisation's audit records (None: every organisation's)."""
    hold = LegalHold(organisation_id=organisation_id, reason=reason, placed_by=actor_id)
    session.add(hold)
    session.flush()
    audit.record(session, AuditEntry("legal_hold.place", "success", actor_type, actor_id, organisation_id,
                                     resource_type="legal_hold", resource_id=str(hold.id)))
    return hold


def release_hold(session: Session, hold_id: int, *, actor_id: str, actor_type: str = "operator") -> LegalHold:
    """Release an active legal hold (it stays on record)."""
    hold = session.scalars(update(LegalHold).where(LegalHold.id == hold_id, LegalHold.released_at.is_(None))
                           .values(released_at=datetime.now(UTC), released_by=actor_id).returning(LegalHold)
                           ).one_or_none()
    if hold is None:
        raise HoldNotFoundError(f"no active legal hold {hold_id}")
    audit.record(session, AuditEntry("legal_hold.release", "success", actor_type, actor_id, hold.organisation_id,
                                     resource_type="legal_hold", resource_id=str(hold.id)))
    return hold


def holds(session: Session, *, active_only: bool = True) -> list[LegalHold]:
    """Legal holds, oldest first (only the active ones unless `active_only` is False)."""
    query = select(LegalHold).order_by(LegalHold.id)
    if active_only:
        query = query.where(LegalHold.released_at.is_(None))
    return list(session.scalars(query))
