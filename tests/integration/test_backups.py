"""Backups against real PostgreSQL: round trips, one snapshot, tamper detection, the drill, the jobs, the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from app.runtime import Runtime
from app.services import alerts, audit, backups
from app.services.jobs import submit
from app.services.organisations import ensure_organisation
from jobs import backups as backup_jobs
from jobs.errors import PermanentError
from jobs.maintenance import ping
from tests.conftest import ROOT, WORKER_ENV

FEW_TABLES = ("organisations", "jobs", "test_effects")


@pytest.fixture()
def databases(clean: Runtime) -> Iterator[Callable[[str], str]]:
    """Makes unique database names on the test server; every one (and any moved-aside copy) is dropped after."""
    base = make_url(clean.settings.database_url).database
    made: list[str] = []

    def name(purpose: str) -> str:
        made.append(f"{base}_{purpose}_{uuid4().hex[:8]}")
        return made[-1]

    yield name
    for db in _databases(clean.settings.database_url):
        if any(db.startswith(n) for n in made):
            backups.drop_database(clean.settings.database_url, db)


def _databases(url: str) -> list[str]:
    with _engine(url, "postgres").connect() as conn:
        return list(conn.execute(text("SELECT datname FROM pg_database")).scalars())


def _engine(url: str, database: str) -> Engine:
    return create_engine(make_url(url).set(database=database), poolclass=NullPool)


def _url(runtime: Runtime, database: str) -> str:
    return make_url(runtime.settings.database_url).set(database=database).render_as_string(hide_password=False)


def _fill(runtime: Runtime) -> None:
    """Rows in a few tables: organisations, ledger jobs, test effects."""
    with runtime.sessions.begin() as session:
        for name in ("clinic-a", "clinic-b"):
            org_id = ensure_organisation(session, name).id
            submit(session, ping, organisation_id=org_id)
    with runtime.engine.begin() as conn:
        for i in range(5):
            conn.execute(text("INSERT INTO test_effects (token, event, pid) VALUES (:t, 'run', 0)"), {"t": f"t{i}"})


def _counts(url: str, database: str, tables: tuple[str, ...]) -> dict[str, int]:
    engine = _engine(url, database)
    with engine.connect() as conn:
        counts = {t: int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one()) for t in tables}
    engine.dispose()
    return counts


def test_backup_restore_round_trip_keeps_every_row(clean: Runtime, tmp_path: Path,
                                                   databases: Callable[[str], str]) -> None:
    _fill(clean)
    taken = backups.take(clean.settings.database_url, tmp_path)
    assert {t: taken.counts[t] for t in FEW_TABLES} == {"organisations": 2, "jobs": 2, "test_effects": 5}
    assert taken.path.name.startswith("triage-") and taken.path.stat().st_mode & 0o077 == 0
    check = subprocess.run(["sha256sum", "-c", taken.path.with_suffix(".sha256").name], cwd=tmp_path, check=False)
    assert check.returncode == 0
    manifest = json.loads(taken.path.with_suffix(".json").read_text())
    assert manifest["database"] == make_url(clean.settings.database_url).database and "pg_dump" in manifest["pg_dump_version"]

    target = databases("restore")
    assert backups.restore(taken.path, _url(clean, target)) is None
    assert _counts(clean.settings.database_url, target, tuple(taken.counts)) == taken.counts


def test_counts_and_dump_come_from_one_snapshot_while_writes_go_on(clean: Runtime, tmp_path: Path,
                                                                   databases: Callable[[str], str]) -> None:
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            with clean.engine.begin() as conn:
                conn.execute(text("INSERT INTO test_effects (token, event, pid) VALUES ('w', 'run', 0)"))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        taken = backups.take(clean.settings.database_url, tmp_path)
    finally:
        stop.set()
        writer.join()
    target = databases("snapshot")
    backups.restore(taken.path, _url(clean, target))
    restored = _counts(clean.settings.database_url, target, ("test_effects",))
    assert restored == {"test_effects": taken.counts["test_effects"]}
    assert _counts(clean.settings.database_url, make_url(clean.settings.database_url).database or "",
                   ("test_effects",))["test_effects"] > taken.counts["test_effects"]


def test_a_flipped_byte_fails_verify_and_restore_refuses(clean: Runtime, tmp_path: Path,
                                                         databases: Callable[[str], str]) -> None:
    taken = backups.take(clean.settings.database_url, tmp_path)
    assert backups.verify(taken.path).sha256 == taken.sha256
    data = bytearray(taken.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    taken.path.write_bytes(bytes(data))
    with pytest.raises(backups.BackupError, match="checksum mismatch"):
        backups.verify(taken.path)
    target = databases("tampered")
    with pytest.raises(backups.BackupError, match="checksum mismatch"):
        backups.restore(taken.path, _url(clean, target))
    assert target not in _databases(clean.settings.database_url)


def test_restore_refuses_a_non_empty_database_and_force_moves_it_aside(clean: Runtime, tmp_path: Path,
                                                                       databases: Callable[[str], str]) -> None:
    _fill(clean)
    taken = backups.take(clean.settings.database_url, tmp_path)
    target = databases("existing")
    backups.restore(taken.path, _url(clean, target))
    with pytest.raises(backups.BackupError, match="not empty"):
        backups.restore(taken.path, _url(clean, target))
    moved = backups.restore(taken.path, _url(clean, target), force=True)
    assert moved is not None and moved.startswith(f"{target}_before_")
    url = clean.settings.database_url
    assert _counts(url, moved, FEW_TABLES) == _counts(url, target, FEW_TABLES) == {t: taken.counts[t] for t in FEW_TABLES}


def test_drill_passes_on_a_good_backup_and_runs_the_checks(clean: Runtime, tmp_path: Path,
                                                           databases: Callable[[str], str]) -> None:
    _fill(clean)
    backups.take(clean.settings.database_url, tmp_path)
    scratch = databases("drill")
    seen: list[int] = []

    def organisations(engine: Engine) -> list[str]:
        with engine.connect() as conn:
            seen.append(int(conn.execute(text("SELECT count(*) FROM organisations")).scalar_one()))
        return []

    result = backups.drill(tmp_path, clean.settings.database_url, scratch, checks=[organisations])
    assert result.ok and result.backup is not None and seen == [2]
    assert scratch not in _databases(clean.settings.database_url)
    failing = backups.drill(tmp_path, clean.settings.database_url, scratch, checks=[lambda engine: ["chain broken at 7"]])
    assert failing.problems == ["chain broken at 7"]


def test_drill_reports_counts_that_differ_from_the_manifest(clean: Runtime, tmp_path: Path,
                                                            databases: Callable[[str], str]) -> None:
    _fill(clean)
    taken = backups.take(clean.settings.database_url, tmp_path)
    manifest_path = taken.path.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["counts"]["organisations"] = 3
    manifest_path.write_text(json.dumps(manifest))
    scratch = databases("drill")
    result = backups.drill(tmp_path, clean.settings.database_url, scratch)
    assert result.problems == ["table organisations: 2 rows restored, 3 in the manifest"]
    assert scratch not in _databases(clean.settings.database_url)
    assert backups.drill(tmp_path / "empty", clean.settings.database_url, scratch).problems[0].startswith("no backup")


def test_jobs_back_up_and_a_failed_drill_dead_letters_and_alerts(clean: Runtime, tmp_path: Path) -> None:
    settings = dataclasses.replace(clean.settings, backup_folder=str(tmp_path))
    dataclasses.replace(clean, settings=settings).use()
    try:
        backup_jobs.backup()
        [taken] = backups.list_backups(tmp_path)
        good = taken.path.with_suffix(".json").read_text()
        manifest = json.loads(good)
        manifest["counts"]["jobs"] = 99
        taken.path.with_suffix(".json").write_text(json.dumps(manifest))
        with pytest.raises(PermanentError, match="table jobs: 0 rows restored, 99 in the manifest"):
            backup_jobs.restore_drill()
        assert _drill_alert_open(clean)
        taken.path.with_suffix(".json").write_text(good)
        backup_jobs.restore_drill()
        assert not _drill_alert_open(clean)
    finally:
        clean.use()
        backups.drop_database(clean.settings.database_url, backup_jobs.scratch_database(clean.settings.database_url))


def _drill_alert_open(runtime: Runtime) -> bool:
    with runtime.sessions() as session:
        return alerts.is_open(session, None, "restore_drill_failed", "database")


def test_cli_backup_list_verify_and_restore(clean: Runtime, tmp_path: Path, databases: Callable[[str], str]) -> None:
    folder = tmp_path / "backups"
    env = {**os.environ, **WORKER_ENV, "TRIAGE_BACKUP_FOLDER": str(folder)}
    # The console script, as operators run it (`python -m app.cli` stops before late-registered commands).
    triage = str(Path(sys.executable).parent / "triage")

    def run(*args: str, code: int = 0) -> str:
        done = subprocess.run([triage, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == code, done.stdout + done.stderr
        return done.stdout + done.stderr

    _fill(clean)
    out = run("backup")
    [taken] = backups.list_backups(folder)
    assert str(taken.path.resolve()) in out and taken.sha256 in out and f"{taken.size} bytes" in out
    assert taken.path.name in run("backup", "list")
    assert "ok" in run("backup", "verify", str(taken.path))
    target = databases("cli")
    assert f"into {target}" in run("restore", str(taken.path), "--database", target)
    assert "not empty" in run("restore", str(taken.path), "--database", target, code=1)
    assert _counts(clean.settings.database_url, target, FEW_TABLES) == {t: taken.counts[t] for t in FEW_TABLES}


def test_the_drill_verifies_the_restored_audit_chain(clean: Runtime, tmp_path: Path,
                                                     databases: Callable[[str], str]) -> None:
    with clean.sessions.begin() as session:
        for action in ("patient.read", "patient.update", "patient.read"):
            audit.record(session, audit.AuditEntry(action, "success", "client", "client:1", None))
    backups.take(clean.settings.database_url, tmp_path / "good")
    assert backups.drill(tmp_path / "good", clean.settings.database_url, databases("drill"),
                         checks=backup_jobs.drill_checks()).ok
    with clean.engine.begin() as conn:  # a superuser rewrites history before the next backup
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("UPDATE audit_events SET action = 'patient.list' WHERE seq = 2"))
    backups.take(clean.settings.database_url, tmp_path / "forged")
    result = backups.drill(tmp_path / "forged", clean.settings.database_url, databases("drill2"),
                           checks=backup_jobs.drill_checks())
    assert result.problems == ["audit chain 0 broken at seq 2: modified"]
