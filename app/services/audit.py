"""The audit log's storage: append one record per audited action, and verify the hash chains.

Each organisation has its own chain (`chain` = organisation id; 0 holds platform-level records).
A BEFORE INSERT trigger in PostgreSQL (migration 0014) locks the chain's head row, numbers the
record (`seq`, from 1), stamps `occurred_at` (clock_timestamp() truncated to milliseconds) and sets

    hash = sha256_hex(utf8(prev_hash + "|" + canonical))

where `prev_hash` is the previous record's hash (64 zeros for a chain's first record) and
`canonical` is these fields, in this order, joined by "|":

    chain, seq, occurred_at, organisation_id, action, outcome, actor_type, actor_id,
    resource_type, resource_id, patient_id, request_id, job_id, source_ip, user_agent

each written as `<length>:<text>` (length in characters, decimal, of the text) or as the empty
string for NULL. Integers are decimal text; occurred_at is integer milliseconds since the Unix
epoch. The length prefix makes "|" inside a value harmless and tells NULL ("") from "" ("0:").
The record's `id` is not hashed (a surrogate key). `verify` recomputes this here, independently
of the SQL function, so a bug or a tampered function in one does not vouch for itself.

Append-only is enforced in PostgreSQL too: UPDATE and TRUNCATE always fail; DELETE only succeeds
for archived records past the retention floor without a legal hold (see `audit_archive`).
The head row stays locked until the writer commits, so write the audit record late in a
transaction: every other writer to the same chain waits for it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import String, Table, insert, select, union
from sqlalchemy.orm import Session

from app.models import AuditArchive, AuditChainHead, AuditEvent
from app.models.audit import ACTOR_TYPES, GENESIS_HASH, OUTCOMES

log = logging.getLogger(__name__)

__all__ = [
    "ACTOR_TYPES",
    "GENESIS_HASH",
    "OUTCOMES",
    "AuditEntry",
    "Break",
    "ChainCheck",
    "VerifyResult",
    "archived_end",
    "batches",
    "canonical",
    "chain_hash",
    "record",
    "record_many",
    "verify",
]

#: The hashed fields, in canonical order.
CANONICAL_FIELDS = ("chain", "seq", "occurred_at", "organisation_id", "action", "outcome", "actor_type", "actor_id",
                    "resource_type", "resource_id", "patient_id", "request_id", "job_id", "source_ip", "user_agent")
#: Every column, in the order archives write them.
COLUMNS = ("id", *CANONICAL_FIELDS, "prev_hash", "hash")
BATCH = 5000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_TABLE = cast(Table, AuditEvent.__table__)
#: One record's INSERT (a Core statement executed with the values: compiled once, no ORM bulk path).
_INSERT = insert(_TABLE)


@dataclass(frozen=True)
class AuditEntry:
    """One audited action, by whom, on what: identifiers only, never clinical content."""

    action: str  # "patient.read", "administration.create", "auth.failed", "dead_letter.purge" ...
    outcome: str  # one of OUTCOMES
    actor_type: str  # one of ACTOR_TYPES
    actor_id: str | None  # "client:12", "cli:root", "job:345"
    organisation_id: int | None  # None: platform-level (e.g. a failed login with an unknown key)
    resource_type: str | None = None
    resource_id: str | None = None
    patient_id: str | None = None  # a clinical patient id ("12") or a FHIR Patient id
    request_id: str | None = None
    job_id: int | None = None
    source_ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class Break:
    """The first broken link found: where, and what is wrong with it."""

    chain: int
    seq: int
    id: int | None  # the record's id; None when the record is missing
    problem: str  # "modified", "missing record(s) before seq N", "out of order", "head mismatch", …
    detail: str = ""


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of a verification: ok, how many records were checked, and the first break."""

    ok: bool
    records_checked: int
    first_break: Break | None


def _values(entry: AuditEntry) -> dict[str, Any]:
    """The entry as column values: validated, strings clipped to their columns so an audit never fails on length."""
    if entry.outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {OUTCOMES}, got {entry.outcome!r}")
    if entry.actor_type not in ACTOR_TYPES:
        raise ValueError(f"audit actor_type must be one of {ACTOR_TYPES}, got {entry.actor_type!r}")
    values = asdict(entry)
    for name, value in values.items():
        column_type = _TABLE.c[name].type
        if isinstance(value, str) and isinstance(column_type, String) and column_type.length:
            values[name] = value.replace("\x00", "")[: column_type.length]
    return values


def record(session: Session, entry: AuditEntry) -> None:
    """Append one audit record in the caller's transaction (one INSERT; the trigger chains it)."""
    session.execute(_INSERT, _values(entry))


def record_many(session: Session, entries: Sequence[AuditEntry]) -> None:
    """Append several records with one multi-row INSERT, chained in the given order.

    The cached statement is executed with a parameter set per record: SQLAlchemy's "insertmanyvalues"
    sends them as one `INSERT … VALUES (…), (…)` in that order, without compiling it anew each time."""
    if entries:
        session.execute(_INSERT, [_values(e) for e in entries])


def epoch_ms(moment: datetime) -> int:
    """Integer milliseconds since the Unix epoch (exact: no float)."""
    return (moment - _EPOCH) // _MS


def _field(value: Any) -> str:
    if value is None:
        return ""
    text = str(epoch_ms(value) if isinstance(value, datetime) else value)
    return f"{len(text)}:{text}"


def canonical(row: Mapping[str, Any]) -> str:
    """The canonical text of a record, as the chaining trigger hashes it (see the module docstring)."""
    return "|".join(_field(row[name]) for name in CANONICAL_FIELDS)


def chain_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """The hash a record must carry after `prev_hash`."""
    return hashlib.sha256(f"{prev_hash}|{canonical(row)}".encode()).hexdigest()


class ChainCheck:
    """Checks the records of one chain, one by one in seq order, against the chain so far."""

    def __init__(self, chain: int, next_seq: int = 1, prev_hash: str = GENESIS_HASH) -> None:
        self.chain, self.next_seq, self.prev_hash = chain, next_seq, prev_hash

    def check(self, row: Mapping[str, Any], nearby: Collection[str] = ()) -> Break | None:
        """The break at this record, or None (and the check moves past it); `nearby`: hashes of neighbours."""
        seq, row_id = row["seq"], row["id"]
        if row["chain"] != self.chain:
            return Break(self.chain, seq, row_id, "modified", f"record is in chain {row['chain']}")
        if seq > self.next_seq:
            return Break(self.chain, seq, row_id, f"missing record(s) before seq {seq}",
                         f"expected seq {self.next_seq}")
        if seq < self.next_seq:
            return Break(self.chain, seq, row_id, "out of order", f"expected seq {self.next_seq}")
        if row["prev_hash"] != self.prev_hash:
            if row["prev_hash"] in nearby:
                return Break(self.chain, seq, row_id, "out of order", "linked to another record than its predecessor")
            return Break(self.chain, seq, row_id, "modified", f"prev_hash does not match seq {seq - 1}")
        if chain_hash(self.prev_hash, row) != row["hash"]:
            return Break(self.chain, seq, row_id, "modified", "content does not match its hash")
        self.next_seq, self.prev_hash = seq + 1, row["hash"]
        return None


def archived_end(session: Session, chain: int) -> tuple[int, str]:
    """Where the hot chain starts: the seq after the last archived record and that record's hash."""
    last = session.execute(select(AuditArchive.last_seq, AuditArchive.head_hash).where(AuditArchive.chain == chain)
                           .order_by(AuditArchive.last_seq.desc()).limit(1)).one_or_none()
    return (1, GENESIS_HASH) if last is None else (last.last_seq + 1, last.head_hash)


def batches(session: Session, chain: int, after: int, until: int | None, size: int) -> Iterator[list[Any]]:
    """The chain's records after seq `after` (up to `until`), in seq order, `size` at a time."""
    columns = [_TABLE.c[name] for name in COLUMNS]
    while True:
        query = select(*columns).where(AuditEvent.chain == chain, AuditEvent.seq > after)
        if until is not None:
            query = query.where(AuditEvent.seq <= until)
        rows = [r._mapping for r in session.execute(query.order_by(AuditEvent.seq).limit(size))]
        if not rows:
            return
        yield rows
        after = rows[-1]["seq"]


def _verify_chain(session: Session, chain: int, size: int) -> tuple[int, Break | None]:
    """Walk one chain: (records checked, first break)."""
    # The head first: a committed head at seq N means records 1..N are committed (the head's lock
    # orders the writers), so newer records written during the walk are simply not looked at.
    head = session.execute(select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.chain == chain)
                           ).one_or_none()
    check = ChainCheck(chain, *archived_end(session, chain))
    checked = 0
    for rows in batches(session, chain, check.next_seq - 1, head.seq if head else None, size):
        nearby = {r["hash"] for r in rows}
        for row in rows:
            found = check.check(row, nearby)
            if found is not None and row["seq"] > check.next_seq:
                # Archived (and removed) while we walked? Then the chain restarts after that archive.
                next_seq, prev_hash = archived_end(session, chain)
                if next_seq == row["seq"]:
                    check = ChainCheck(chain, next_seq, prev_hash)
                    found = check.check(row, nearby)
            if found is not None:
                return checked, found
            checked += 1
    end = (check.next_seq - 1, check.prev_hash)
    if head is None and end == (0, GENESIS_HASH):
        return checked, None  # an empty chain: nothing was ever written to it
    if head is None or end != (head.seq, head.hash):
        detail = "no chain head" if head is None else f"chain ends at seq {end[0]}, its head is at seq {head.seq}"
        return checked, Break(chain, head.seq if head else end[0], None, "head mismatch", detail)
    return checked, None


def _chains(session: Session) -> list[int]:
    """Every chain that has a head or a record."""
    found = union(select(AuditChainHead.chain), select(AuditEvent.chain).distinct())
    return sorted(session.scalars(select(found.subquery().c.chain)))


def verify(session: Session, organisation_id: int | None = None, *, batch_size: int = BATCH) -> VerifyResult:
    """Walk every chain (or one: an organisation's, 0 for the platform's) and report the first broken link."""
    chains = _chains(session) if organisation_id is None else [organisation_id]
    checked = 0
    for chain in chains:
        count, found = _verify_chain(session, chain, batch_size)
        checked += count
        if found is not None:
            log.warning("Audit chain %s: broken at seq %s (%s)", chain, found.seq, found.problem)
            return VerifyResult(False, checked, found)
    return VerifyResult(True, checked, None)
