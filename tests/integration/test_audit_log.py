"""The audit log's storage: hash chains built by PostgreSQL, append-only rules, verify, archive and legal holds."""

from __future__ import annotations

import gzip
import threading
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.config import Settings, SettingsError
from app.runtime import Runtime
from app.services import alerts, audit, audit_archive
from app.services.audit import GENESIS_HASH, AuditEntry
from app.services.organisations import ensure_organisation
from jobs import audit as audit_jobs
from tests.conftest import Processes

TODAY = datetime.now(UTC).date()


def entry(organisation_id: int | None, action: str = "patient.read", **fields: Any) -> AuditEntry:
    """A client's successful read of a patient, unless told otherwise."""
    values: dict[str, Any] = {"outcome": "success", "actor_type": "client", "actor_id": "client:1",
                              "patient_id": "12", "resource_type": "Patient", "resource_id": "12"}
    return AuditEntry(action=action, organisation_id=organisation_id, **{**values, **fields})


def write(runtime: Runtime, organisation_id: int | None, count: int) -> None:
    """`count` records, one transaction each."""
    for i in range(count):
        with runtime.sessions.begin() as session:
            audit.record(session, entry(organisation_id, request_id=f"req-{i}"))


def rows(runtime: Runtime, chain: int) -> list[Any]:
    """Every hot record of a chain, in seq order."""
    with runtime.engine.connect() as conn:
        return [r._mapping for r in conn.execute(text("SELECT * FROM audit_events WHERE chain = :c ORDER BY seq"),
                                                 {"c": chain})]


def tamper(runtime: Runtime, *statements: str, **params: Any) -> None:
    """Run statements with the audit triggers off, as only a superuser can."""
    with runtime.engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            conn.execute(text(statement), params)


def backdate(runtime: Runtime, chain: int, days_ago: dict[int, int]) -> None:
    """Move records (seq → days ago, at noon UTC) into the past and re-hash the chain so it stays valid."""
    prev = GENESIS_HASH
    with runtime.engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for row in rows(runtime, chain):
            values = {**row, "prev_hash": prev}
            if row["seq"] in days_ago:
                values["occurred_at"] = datetime.combine(TODAY - timedelta(days=days_ago[row["seq"]]), time(12), UTC)
            values["hash"] = prev = audit.chain_hash(prev, values)
            conn.execute(text("UPDATE audit_events SET occurred_at = :occurred_at, prev_hash = :prev_hash,"
                              " hash = :hash WHERE id = :id"), values)
        conn.execute(text("UPDATE audit_chain_heads SET hash = :h WHERE chain = :c"), {"h": prev, "c": chain})


def verify(runtime: Runtime, organisation_id: int | None = None) -> audit.VerifyResult:
    with runtime.sessions() as session:
        return audit.verify(session, organisation_id)


def test_records_are_chained_per_organisation(clean: Runtime, org_id: int) -> None:
    write(clean, org_id, 3)
    write(clean, None, 2)
    chain = rows(clean, org_id)
    assert [r["seq"] for r in chain] == [1, 2, 3] and [r["seq"] for r in rows(clean, 0)] == [1, 2]
    assert chain[0]["prev_hash"] == GENESIS_HASH
    assert [r["prev_hash"] for r in chain[1:]] == [r["hash"] for r in chain[:-1]]
    assert all(r["hash"] == audit.chain_hash(r["prev_hash"], r) for r in chain)
    assert all(r["occurred_at"].microsecond % 1000 == 0 for r in chain)
    with clean.engine.connect() as conn:
        heads = dict(conn.execute(text("SELECT chain, hash FROM audit_chain_heads")).all())
    assert heads == {org_id: chain[-1]["hash"], 0: rows(clean, 0)[-1]["hash"]}
    assert verify(clean) == audit.VerifyResult(True, 5, None)
    assert verify(clean, org_id).records_checked == 3 and verify(clean, 0).records_checked == 2


def test_python_canonical_form_matches_the_trigger(clean: Runtime, org_id: int) -> None:
    with clean.sessions.begin() as session:
        audit.record(session, entry(org_id, actor_id="cli:a|b", resource_id="", patient_id=None, job_id=7,
                                    user_agent="Mozillä/5.0 (x|y) 1:2", source_ip="::1", request_id="r|1"))
    with clean.engine.connect() as conn:
        in_sql = conn.execute(text("SELECT audit_canonical(e) FROM audit_events e")).scalar_one()
    row = rows(clean, org_id)[0]
    assert audit.canonical(row) == in_sql
    org, ms = f"{len(str(org_id))}:{org_id}", audit.epoch_ms(row["occurred_at"])
    # resource_id "" is "0:", patient_id NULL is nothing; "|" inside a value is covered by its length.
    assert in_sql == (f"{org}|1:1|13:{ms}|{org}|12:patient.read|7:success|6:client|7:cli:a|b|7:Patient|0:||3:r|1"
                      "|1:7|3:::1|21:Mozillä/5.0 (x|y) 1:2")


def test_record_many_chains_in_order_and_record_clips_and_validates(clean: Runtime, org_id: int) -> None:
    with clean.sessions.begin() as session:
        audit.record_many(session, [entry(org_id, resource_id=str(i), user_agent="x" * 900) for i in range(4)])
        audit.record_many(session, [])
    chain = rows(clean, org_id)
    assert [(r["seq"], r["resource_id"]) for r in chain] == [(1, "0"), (2, "1"), (3, "2"), (4, "3")]
    assert len(chain[0]["user_agent"]) == 500
    with clean.sessions() as session, pytest.raises(ValueError, match="outcome"):
        audit.record(session, entry(org_id, outcome="maybe"))
    assert verify(clean).ok


def test_concurrent_writers_on_one_chain_stay_one_valid_chain(clean: Runtime, org_id: int) -> None:
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(40):
                with clean.sessions.begin() as session:
                    if i == 0:
                        start.wait(timeout=10)  # both race to create the chain's head
                    audit.record(session, entry(org_id, request_id=f"{name}-{i}"))
                    if i % 10 == 0:
                        audit.record_many(session, [entry(org_id, request_id=f"{name}-{i}-{j}") for j in range(3)])
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert [r["seq"] for r in rows(clean, org_id)] == list(range(1, 2 * (40 + 4 * 3) + 1))
    assert verify(clean) == audit.VerifyResult(True, 104, None)


@pytest.mark.parametrize("statement", [
    "UPDATE audit_events SET action = 'patient.update' WHERE seq = 2",
    "DELETE FROM audit_events WHERE seq = 2",
    "TRUNCATE audit_events",
    "UPDATE audit_chain_heads SET seq = 1",
    "DELETE FROM audit_chain_heads",
    "INSERT INTO audit_chain_heads VALUES (999, 1, repeat('a', 64))",
    "TRUNCATE audit_chain_heads",
    "TRUNCATE audit_archives",
])
def test_the_audit_log_cannot_be_changed_even_by_the_tables_owner(clean: Runtime, org_id: int,
                                                                    statement: str) -> None:
    write(clean, org_id, 3)
    with pytest.raises(DBAPIError, match="not allowed|retention"), clean.engine.begin() as conn:
        conn.execute(text(statement))
    assert len(rows(clean, org_id)) == 3 and verify(clean).ok


def test_delete_needs_an_archive_an_expired_retention_and_no_hold(clean: Runtime, org_id: int) -> None:
    write(clean, org_id, 2)
    backdate(clean, org_id, {1: 120})
    young, old = rows(clean, org_id)[1], rows(clean, org_id)[0]
    with pytest.raises(DBAPIError, match="not archived"), clean.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": old["id"]})
    archived = ("INSERT INTO audit_archives (chain, day, path, sha256, record_count, first_seq, last_seq, head_hash)"
                " VALUES (:c, :d, 'x', repeat('0', 64), 1, :s, :s, repeat('0', 64))")
    for row, held, problem in ((young, False, "retention"), (old, True, "legal hold")):
        with pytest.raises(DBAPIError, match=problem), clean.engine.begin() as conn:
            conn.execute(text(archived), {"c": org_id, "d": row["occurred_at"].astimezone(UTC).date(), "s": row["seq"]})
            if held:
                conn.execute(text("INSERT INTO legal_holds (organisation_id, reason) VALUES (:o, 'case 1')"),
                             {"o": org_id})
            conn.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": row["id"]})
    assert len(rows(clean, org_id)) == 2


@pytest.mark.parametrize(("statements", "seq", "problem"), [
    (["UPDATE audit_events SET patient_id = '99' WHERE chain = :c AND seq = 3"], 3, "modified"),
    (["UPDATE audit_events SET occurred_at = occurred_at - interval '1 hour' WHERE chain = :c AND seq = 2"],
     2, "modified"),
    (["DELETE FROM audit_events WHERE chain = :c AND seq = 3"], 4, "missing record(s) before seq 4"),
    (["DELETE FROM audit_events WHERE chain = :c AND seq = 1"], 2, "missing record(s) before seq 2"),
    (["DELETE FROM audit_events WHERE chain = :c AND seq = 5"], 5, "head mismatch"),
    # Reordered: two records' places swapped, or their contents (with their hashes) swapped.
    (["UPDATE audit_events SET seq = -1 WHERE chain = :c AND seq = 3",
      "UPDATE audit_events SET seq = 3 WHERE chain = :c AND seq = 4",
      "UPDATE audit_events SET seq = 4 WHERE chain = :c AND seq = -1"], 3, "out of order"),
    ([("UPDATE audit_events a SET (action, request_id, prev_hash, hash) = (SELECT b.action, b.request_id,"
      " b.prev_hash, b.hash FROM audit_events b WHERE b.chain = a.chain AND b.seq = 9 - a.seq)"
      " WHERE a.chain = :c AND a.seq IN (4, 5)")], 4, "out of order"),
])
def test_verify_finds_the_first_broken_link(clean: Runtime, org_id: int, statements: list[str], seq: int,
                                            problem: str) -> None:
    write(clean, None, 2)
    write(clean, org_id, 5)
    tamper(clean, *statements, c=org_id)
    result = verify(clean)
    assert not result.ok and result.first_break is not None
    assert (result.first_break.chain, result.first_break.seq, result.first_break.problem) == (org_id, seq, problem)
    assert verify(clean, 0).ok


def test_verify_job_raises_a_platform_alert_without_phi_and_resolves_it(clean: Runtime, org_id: int) -> None:
    write(clean, org_id, 3)
    tamper(clean, "UPDATE audit_events SET patient_id = '4711' WHERE seq = 2")
    audit_jobs.verify_chains()
    with clean.sessions() as session:
        assert alerts.is_open(session, None, audit_jobs.CONDITION, audit_jobs.SUBJECT)
        alert = alerts.page(session, organisation_id=None, status="triggered")[0]
    assert alert.severity == "critical" and alert.organisation_id is None
    assert alert.details == {"chain": org_id, "seq": 2, "record_id": rows(clean, org_id)[1]["id"],
                             "problem": "modified"}
    assert "4711" not in alert.summary + str(alert.details)
    tamper(clean, "UPDATE audit_events SET patient_id = '12' WHERE seq = 2")
    audit_jobs.verify_chains()
    with clean.sessions() as session:
        assert not alerts.is_open(session, None, audit_jobs.CONDITION, audit_jobs.SUBJECT)


def _old_chain(runtime: Runtime, organisation_id: int | None) -> None:
    """Eight records: two 120 days old, one 100, one 95, one 89 (within the retention), three today."""
    write(runtime, organisation_id, 8)
    backdate(runtime, organisation_id or 0, {1: 120, 2: 120, 3: 100, 4: 95, 5: 89})


def test_archive_removes_only_archived_days_past_the_retention(clean: Runtime, org_id: int, tmp_path: Path) -> None:
    _old_chain(clean, org_id)
    _old_chain(clean, None)
    with clean.sessions.begin() as session:
        made = audit_archive.archive(session, tmp_path, TODAY, 90, actor_id="job:1", job_id=1)
        summary = [(a.chain, a.day, a.first_seq, a.last_seq, a.record_count) for a in made]
    days = [TODAY - timedelta(days=n) for n in (120, 100, 95)]
    assert summary == [(c, d, f, la, n) for c in (0, org_id)
                       for d, f, la, n in zip(days, (1, 3, 4), (2, 3, 4), (2, 1, 1), strict=True)]
    hot = rows(clean, org_id)
    assert [r["seq"] for r in hot] == list(range(5, 12))  # 5-8 kept, 9-11 record the archiving
    assert [r["action"] for r in hot[4:]] == ["audit.archive"] * 3 and hot[4]["actor_id"] == "job:1"
    assert hot[0]["occurred_at"].date() == TODAY - timedelta(days=89)
    assert verify(clean) == audit.VerifyResult(True, 2 * 7, None)
    for archived in made:
        assert audit_archive.verify_archive(tmp_path / archived.path) == audit.VerifyResult(
            True, archived.record_count, None)
    with clean.sessions() as session:
        assert audit_archive.verify_archives(session, tmp_path) == audit.VerifyResult(True, 8, None)
    with clean.sessions.begin() as session:
        assert audit_archive.archive(session, tmp_path, TODAY, 90) == []
    with clean.sessions.begin() as session, pytest.raises(DBAPIError, match="within the 90-day retention"):
        audit_archive.archive(session, tmp_path, TODAY + timedelta(days=5), 90)  # a wrong clock: the database refuses
    assert len(rows(clean, org_id)) == 7
    with clean.sessions.begin() as session, pytest.raises(ValueError, match="at least 90"):
        audit_archive.archive(session, tmp_path, TODAY, 30)


def test_verify_sees_no_break_when_records_are_written_or_archived_meanwhile(
        clean: Runtime, org_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _old_chain(clean, org_id)
    real, raced = audit.archived_end, []

    def archive_meanwhile(session: Any, chain: int) -> tuple[int, str]:
        found = real(session, chain)  # verify now expects the chain to start at seq 1 …
        if not raced:
            raced.append(chain)  # … but an archive run removes seqs 1-4 before its first batch is read
            with clean.sessions.begin() as other:
                audit_archive.archive(other, tmp_path, TODAY, 90)
            write(clean, org_id, 2)  # and records keep arriving during the walk
        return found

    monkeypatch.setattr(audit, "archived_end", archive_meanwhile)
    with clean.sessions() as session:
        assert audit.verify(session, batch_size=2) == audit.VerifyResult(True, 4, None)
    assert raced == [org_id] and verify(clean) == audit.VerifyResult(True, 9, None)


def test_archive_refuses_a_broken_chain(clean: Runtime, org_id: int, tmp_path: Path) -> None:
    _old_chain(clean, org_id)
    tamper(clean, "UPDATE audit_events SET action = 'patient.delete' WHERE chain = :c AND seq = 2", c=org_id)
    with clean.sessions.begin() as session, pytest.raises(audit_archive.ArchiveError, match="modified at seq 2"):
        audit_archive.archive(session, tmp_path, TODAY, 90)
    assert len(rows(clean, org_id)) == 8 and list(tmp_path.rglob("*.partial")) == []


def test_archive_job_archives_one_day_per_transaction(clean: Runtime, org_id: int, tmp_path: Path) -> None:
    _old_chain(clean, org_id)
    replace(clean, settings=replace(clean.settings, audit_archive_folder=str(tmp_path))).use()
    try:
        audit_jobs.archive_expired()
    finally:
        clean.use()
    days = sorted(f"{TODAY - timedelta(days=n)}.jsonl.gz" for n in (120, 100, 95))
    assert sorted(p.name for p in (tmp_path / str(org_id)).glob("*.gz")) == days
    assert [r["seq"] for r in rows(clean, org_id)] == list(range(5, 12)) and verify(clean).ok


def test_a_longer_retention_keeps_more(clean: Runtime, org_id: int, tmp_path: Path) -> None:
    _old_chain(clean, org_id)
    with clean.sessions.begin() as session:
        made = audit_archive.archive(session, tmp_path, TODAY, 110)
    assert [(a.first_seq, a.last_seq) for a in made] == [(1, 2)]
    assert verify(clean).ok


def test_legal_holds_stop_archiving(clean: Runtime, org_id: int, tmp_path: Path) -> None:
    with clean.sessions.begin() as session:
        other = ensure_organisation(session, "other-org").id
    _old_chain(clean, org_id)
    _old_chain(clean, other)
    with clean.sessions.begin() as session:
        hold = audit_archive.place_hold(session, organisation_id=org_id, reason="litigation 42", actor_id="cli:legal")
    with clean.sessions.begin() as session:
        assert {a.chain for a in audit_archive.archive(session, tmp_path, TODAY, 90)} == {other}
    assert [r["seq"] for r in rows(clean, org_id)][:5] == [1, 2, 3, 4, 5]
    with clean.sessions.begin() as session:
        everything = audit_archive.place_hold(session, organisation_id=None, reason="audit", actor_id="cli:legal")
        audit_archive.release_hold(session, hold.id, actor_id="cli:legal")
    with clean.sessions.begin() as session:
        assert audit_archive.archive(session, tmp_path, TODAY, 90) == []
        audit_archive.release_hold(session, everything.id, actor_id="cli:legal")
        with pytest.raises(audit_archive.HoldNotFoundError):
            audit_archive.release_hold(session, everything.id, actor_id="cli:legal")
    with clean.sessions.begin() as session:
        assert {a.chain for a in audit_archive.archive(session, tmp_path, TODAY, 90)} == {org_id}
        assert [h.id for h in audit_archive.holds(session)] == []
        assert len(audit_archive.holds(session, active_only=False)) == 2
    actions = [r["action"] for r in rows(clean, org_id) + rows(clean, 0)]
    assert actions.count("legal_hold.place") == 2 and actions.count("legal_hold.release") == 2
    assert verify(clean).ok


def test_verify_archive_detects_a_modified_file(clean: Runtime, org_id: int, tmp_path: Path) -> None:
    _old_chain(clean, org_id)
    with clean.sessions.begin() as session:
        path = tmp_path / audit_archive.archive(session, tmp_path, TODAY, 90)[0].path
    assert audit_archive.verify_archive(path).ok
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines[1] = lines[1].replace('"patient_id":"12"', '"patient_id":"13"')
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    assert audit_archive.verify_archive(path).first_break.problem == "checksum mismatch"  # type: ignore[union-attr]
    sidecar = path.with_name(path.name + ".sha256")
    sidecar.write_text(f"{audit_archive.file_sha256(path)}  {path.name}\n")  # the checksum forged too
    found = audit_archive.verify_archive(path).first_break
    assert found is not None and (found.seq, found.problem) == (2, "modified")
    with clean.sessions() as session:
        broken = audit_archive.verify_archives(session, tmp_path).first_break
    assert broken is not None and broken.problem == "checksum mismatch"  # audit_archives keeps the real one


def test_retention_setting_may_only_be_longer_than_90_days() -> None:
    env = {"DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://x"}
    assert Settings.from_env(env).audit_retention_days == 90
    assert Settings.from_env({**env, "TRIAGE_AUDIT_RETENTION_DAYS": "365"}).audit_retention_days == 365
    with pytest.raises(SettingsError, match="at least 90"):
        Settings.from_env({**env, "TRIAGE_AUDIT_RETENTION_DAYS": "30"})


def test_cli_verify_exit_codes_archive_and_holds(clean: Runtime, procs: Processes, org_id: int,
                                                  tmp_path: Path) -> None:
    _old_chain(clean, org_id)
    env = {"TRIAGE_AUDIT_ARCHIVE_FOLDER": str(tmp_path)}
    assert "ok: 8 records verified" in procs.run("audit", "verify")
    assert "legal hold 1 placed" in procs.run("audit", "holds", "place", "--org", str(org_id), "--reason", "case 7")
    assert "case 7" in procs.run("audit", "holds", "list")
    assert "0 chain-day(s) archived" in procs.run("audit", "archive", env=env)
    procs.run("audit", "holds", "release", "1")
    assert "no active legal hold 1" in procs.run("audit", "holds", "release", "1", expect_code=1)
    assert "3 chain-day(s) archived" in procs.run("audit", "archive", env=env)
    assert "ok:" in procs.run("audit", "verify", "--archives", env=env)
    tamper(clean, "UPDATE audit_events SET action = 'patient.delete' WHERE chain = :c AND seq = 6", c=org_id)
    output = procs.run("audit", "verify", expect_code=1)
    assert f"BROKEN: chain {org_id} at seq 6" in output and "modified" in output
    assert "ok:" in procs.run("audit", "verify", "--org", "0")
