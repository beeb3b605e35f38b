"""Backups without a database: names, checksums and sidecars, pruning, count comparison, libpq environment."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app.services import backups

NOW = datetime(2026, 12, 2, 3, 15, 0, tzinfo=UTC)


def _fake(folder: Path, created_at: datetime, content: bytes = b"PGDMP fake dump") -> backups.Backup:
    """A sealed backup whose dump is a few bytes (what pg_dump wrote does not matter here)."""
    partial = folder / f".{backups.backup_name(created_at)}.partial"
    partial.write_bytes(content)
    return backups.seal(partial, folder / backups.backup_name(created_at), created_at,
                        {"database": "triage", "counts": {"jobs": 3}, "pg_dump_version": "pg_dump (PostgreSQL) 15"})


def test_names_are_utc_stamps_with_a_serial_on_collision() -> None:
    assert backups.backup_name(NOW) == "triage-20261202T031500Z.dump"
    assert backups.backup_name(NOW, 2) == "triage-20261202T031500Z-2.dump"
    cet = NOW.astimezone(datetime.now().astimezone().tzinfo)
    assert backups.backup_name(cet) == "triage-20261202T031500Z.dump"


def test_seal_writes_a_sha256sum_sidecar_and_a_manifest(tmp_path: Path) -> None:
    backup = _fake(tmp_path, NOW)
    assert backup.path.name == "triage-20261202T031500Z.dump" and backup.counts == {"jobs": 3}
    assert backup.created_at == NOW and backup.size == len(b"PGDMP fake dump")
    assert backup.path.with_suffix(".sha256").read_text() == f"{backup.sha256}  {backup.path.name}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "triage-20261202T031500Z.dump", "triage-20261202T031500Z.json", "triage-20261202T031500Z.sha256"]
    assert backups.verify(backup.path) == backup


def test_verify_detects_a_flipped_byte_and_a_missing_sidecar(tmp_path: Path) -> None:
    backup = _fake(tmp_path, NOW)
    data = bytearray(backup.path.read_bytes())
    data[3] ^= 0x01
    backup.path.write_bytes(bytes(data))
    with pytest.raises(backups.BackupError, match="checksum mismatch"):
        backups.verify(backup.path)
    backup.path.with_suffix(".sha256").unlink()
    with pytest.raises(backups.BackupError, match="no readable checksum"):
        backups.verify(backup.path)


def test_prune_keeps_young_backups_and_always_the_newest(tmp_path: Path) -> None:
    old = [_fake(tmp_path, NOW - timedelta(days=d)) for d in (45, 31)]
    young = [_fake(tmp_path, NOW - timedelta(days=d)) for d in (29, 1)]
    assert backups.prune(tmp_path, 30, NOW) == [b.path for b in old]
    assert [b.path for b in backups.list_backups(tmp_path)] == [b.path for b in young]
    assert len(list(tmp_path.iterdir())) == 6  # the young ones' dumps and sidecars
    assert backups.prune(tmp_path, 0, NOW + timedelta(days=400)) == [young[0].path]
    assert [b.path for b in backups.list_backups(tmp_path)] == [young[1].path]


def test_prune_sweeps_day_old_leftovers_of_interrupted_backups_only(tmp_path: Path) -> None:
    _fake(tmp_path, NOW)
    stale, fresh = tmp_path / ".triage-20261101T000000Z.dump.partial", tmp_path / ".triage-20261202T031000Z.dump.partial"
    orphan = tmp_path / "triage-20261101T000000Z.json"
    for path in (stale, fresh, orphan):
        path.write_text("x")
    day_old = (NOW - timedelta(days=2)).timestamp()
    for path in (stale, orphan):
        os.utime(path, (day_old, day_old))
    backups.prune(tmp_path, 30, NOW)
    assert not stale.exists() and not orphan.exists() and fresh.exists()
    assert len(backups.list_backups(tmp_path)) == 1


def test_list_skips_a_dump_without_a_readable_manifest(tmp_path: Path) -> None:
    good = _fake(tmp_path, NOW)
    (tmp_path / backups.backup_name(NOW + timedelta(hours=1))).write_bytes(b"no manifest")
    assert backups.list_backups(tmp_path) == [good]
    assert backups.list_backups(tmp_path / "missing") == []


def test_compare_counts_names_each_difference() -> None:
    assert backups.compare_counts({"a": 1, "b": 2}, {"a": 1, "b": 2}) == []
    assert backups.compare_counts({"a": 1, "b": 2}, {"a": 0, "c": 5}) == [
        "table b: missing after restore", "table c: not in the backup's manifest",
        "table a: 0 rows restored, 1 in the manifest"]


def test_the_password_goes_to_the_environment_never_elsewhere() -> None:
    url = make_url("postgresql+psycopg2://triage:s3cret@db.internal:6543/clinic?sslmode=verify-full")
    env = backups.libpq_env(url, base={"PATH": "/usr/bin", "PGPASSWORD": "inherited"})
    assert env == {"PATH": "/usr/bin", "PGHOST": "db.internal", "PGPORT": "6543", "PGUSER": "triage",
                   "PGPASSWORD": "s3cret", "PGDATABASE": "clinic", "PGSSLMODE": "verify-full"}
    assert "s3cret" not in repr(backups.Backup(Path("x"), "0", 0, {}, NOW, database="clinic"))
