"""`triage backup` and `triage restore`: database backups on the command line."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy.engine import make_url

from app.config import Settings
from app.logs import configure_logging
from app.services import backups


def _settings() -> Settings:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return settings


@click.group(invoke_without_command=True)
@click.pass_context
def backup(ctx: click.Context) -> None:
    """Back up the database now and prune old backups (or: list, verify FILE, drill)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings()
    folder = Path(settings.backup_folder)
    try:
        taken = backups.take(settings.database_url, folder)
    except backups.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    removed = backups.prune(folder, settings.backup_retention_days, datetime.now(UTC))
    click.echo(f"backup  {taken.path.resolve()}")
    click.echo(f"sha256  {taken.sha256}")
    click.echo(f"size    {taken.size} bytes, {len(taken.counts)} tables, {sum(taken.counts.values())} rows")
    click.echo(f"pruned  {len(removed)} backup(s) older than {settings.backup_retention_days} days")


@backup.command("list")
def list_backups() -> None:
    """Every backup in the backup folder, oldest first: file, time, size, rows, checksum."""
    for b in backups.list_backups(Path(_settings().backup_folder)):
        click.echo(f"{b.path.name}\t{b.created_at:%Y-%m-%d %H:%M:%S}Z\t{b.size}\t{sum(b.counts.values())}\t{b.sha256}")


@backup.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify(file: Path) -> None:
    """Check FILE against its SHA-256 sidecar and manifest (exit 1 when they differ)."""
    try:
        checked = backups.verify(file)
    except backups.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"ok  {checked.sha256}  {file.name}")


@backup.command("drill")
def drill() -> None:
    """Restore the latest backup into a scratch database, check it, drop it (exit 1 on problems)."""
    from jobs.backups import drill_checks, scratch_database

    settings = _settings()
    result = backups.drill(Path(settings.backup_folder), settings.database_url,
                           scratch_database(settings.database_url), drill_checks())
    click.echo(f"drilled {result.backup.path.name if result.backup else '-'}: "
               f"{'ok' if result.ok else f'{len(result.problems)} problem(s)'}")
    for problem in result.problems:
        click.echo(f"  {problem}")
    sys.exit(0 if result.ok else 1)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--database", "name", required=True, help="Database to restore into (created if missing).")
@click.option("--force", is_flag=True, help="If NAME exists and is not empty, rename it aside first (nothing is dropped).")
def restore(file: Path, name: str, force: bool) -> None:
    """Verify FILE's checksum and restore it into database NAME on the configured server."""
    settings = _settings()
    target = make_url(settings.database_url).set(database=name)
    try:
        moved_to = backups.restore(file, target.render_as_string(hide_password=False), force=force)
    except backups.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    if moved_to:
        click.echo(f"the existing {name} was renamed to {moved_to} (drop it once satisfied)")
    click.echo(f"restored {file.name} into {name}; run `triage db upgrade` against it if the code is newer")
