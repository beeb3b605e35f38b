"""`triage audit`: verify the audit log's hash chains, archive records past their retention, legal holds."""

from __future__ import annotations

import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from app.config import Settings
from app.logs import configure_logging
from app.runtime import Runtime


def _runtime() -> Runtime:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return Runtime.build(settings, pool_size=2)


def _operator() -> str:
    return f"cli:{getpass.getuser()}"


@click.group()
def audit() -> None:
    """The audit log: hash chains, archives and legal holds."""


@audit.command("verify")
@click.option("--org", "organisation_id", type=int, default=None, help="One organisation's chain (0: platform).")
@click.option("--archives", is_flag=True, help="Also re-read every archive file against audit_archives.")
def verify(organisation_id: int | None, archives: bool) -> None:
    """Walk the hash chains; exit 1 and print the first broken link if there is one."""
    from app.services import audit as audit_log
    from app.services import audit_archive

    runtime = _runtime()
    with runtime.sessions() as session:
        result = audit_log.verify(session, organisation_id)
        if result.ok and archives:
            result = audit_archive.verify_archives(session, Path(runtime.settings.audit_archive_folder))
    if result.first_break is not None:
        found = result.first_break
        click.echo(f"BROKEN: chain {found.chain} at seq {found.seq} (record {found.id or '-'}): {found.problem}"
                   f"{f' - {found.detail}' if found.detail else ''}")
        sys.exit(1)
    click.echo(f"ok: {result.records_checked} records verified")


@audit.command("archive")
@click.option("--actor", default=_operator, help="Who archives (recorded).")
def archive(actor: str) -> None:
    """Archive and remove records past TRIAGE_AUDIT_RETENTION_DAYS (skipping chains under a legal hold)."""
    from app.services import audit_archive

    runtime = _runtime()
    folder, days = Path(runtime.settings.audit_archive_folder), runtime.settings.audit_retention_days
    today, total = datetime.now(UTC).date(), 0
    while True:
        try:
            with runtime.sessions.begin() as session:
                made = audit_archive.archive(session, folder, today, days, actor_id=actor, max_days=1)
        except audit_archive.ArchiveError as exc:
            raise click.ClickException(str(exc)) from None
        if not made:
            break
        total += 1
        click.echo(f"chain {made[0].chain} {made[0].day}: {made[0].record_count} records -> {made[0].path}")
    click.echo(f"{total} chain-day(s) archived into {folder}")


@audit.group()
def holds() -> None:
    """Legal holds: while one is active, its organisation's audit records are never archived or removed."""


@holds.command("list")
@click.option("--all", "everything", is_flag=True, help="Released holds too.")
def holds_list(everything: bool) -> None:
    """Holds: id, organisation (* = all), placed, released, reason."""
    from app.services import audit_archive

    with _runtime().sessions() as session:
        found = audit_archive.holds(session, active_only=not everything)
    click.echo("id\torganisation\tplaced\treleased\treason")
    for h in found:
        released = f"{h.released_at:%Y-%m-%d %H:%M} by {h.released_by}" if h.released_at else "-"
        click.echo(f"{h.id}\t{'*' if h.organisation_id is None else h.organisation_id}\t"
                   f"{h.placed_at:%Y-%m-%d %H:%M} by {h.placed_by}\t{released}\t{h.reason}")


@holds.command("place")
@click.option("--org", "organisation_id", type=int, default=None, help="Organisation id (omit with --all-orgs).")
@click.option("--all-orgs", is_flag=True, help="Hold every organisation's records, and platform-level ones.")
@click.option("--reason", required=True)
@click.option("--actor", default=_operator, help="Who places the hold (recorded).")
def holds_place(organisation_id: int | None, all_orgs: bool, reason: str, actor: str) -> None:
    """Place a legal hold on one organisation's audit records (or on all)."""
    from app.services import audit_archive

    if (organisation_id is None) != all_orgs:
        raise click.UsageError("give --org ID or --all-orgs")
    with _runtime().sessions.begin() as session:
        hold = audit_archive.place_hold(session, organisation_id=organisation_id, reason=reason, actor_id=actor)
    click.echo(f"legal hold {hold.id} placed")


@holds.command("release")
@click.argument("hold_id", type=int)
@click.option("--actor", default=_operator, help="Who releases the hold (recorded).")
def holds_release(hold_id: int, actor: str) -> None:
    """Release an active legal hold (it stays on record)."""
    from app.services import audit_archive

    try:
        with _runtime().sessions.begin() as session:
            audit_archive.release_hold(session, hold_id, actor_id=actor)
    except audit_archive.HoldNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"legal hold {hold_id} released")
