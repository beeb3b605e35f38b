"""The `triage` command: workers, scheduler, reconciler, dead letters, database."""

from __future__ import annotations

import getpass
import sys
import time
from typing import Any

import click

from app.cli_audit import audit
from app.cli_backups import backup, restore
from app.config import Settings
from app.logs import configure_logging
from app.runtime import Runtime


def _runtime(pool_size: int = 5) -> Runtime:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return Runtime.build(settings, pool_size=pool_size)


def _audited(session: Any, action: str, resource_type: str, resource_id: object, *, organisation_id: int | None = None,
             actor: str | None = None) -> None:
    """The audit record of an operator's action from this CLI, in the action's own transaction."""
    from app.services import audit

    audit.record(session, audit.AuditEntry(
        action=action, outcome="success", actor_type="operator", actor_id=actor or f"cli:{getpass.getuser()}",
        organisation_id=organisation_id, resource_type=resource_type, resource_id=str(resource_id)))


@click.group()
def main() -> None:
    """Triage: durable job processing for clinical software."""


@main.command()
@click.argument("queues", nargs=-1)
@click.option("--processes", "-n", default=1, show_default=True, help="Worker processes to supervise.")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--max-jobs", type=int, default=None, help="Replace a process after this many jobs.")
@click.option("--child", is_flag=True, hidden=True, help="Run one worker process, unsupervised.")
def worker(queues: tuple[str, ...], processes: int, burst: bool, max_jobs: int | None, child: bool) -> None:
    """Run workers on QUEUES (default: all, in priority order); SIGTERM drains them."""
    from app.queues import QUEUE_NAMES, ordered

    names = ordered(list(queues)) if queues else list(QUEUE_NAMES)
    if not child:
        from workers.supervisor import supervise

        args = [*names, *(["--burst"] if burst else []), *(["--max-jobs", str(max_jobs)] if max_jobs else [])]
        sys.exit(supervise(args, processes, burst=burst))
    from workers.worker import run_worker

    runtime = _runtime(pool_size=2)
    if "webhooks" in names:
        runtime.settings.require_encryption_keys()  # deliveries are signed with secrets stored encrypted
    limit = max_jobs if max_jobs is not None else runtime.settings.worker_max_jobs
    sys.exit(run_worker(runtime, names, burst=burst, max_jobs=limit))


@main.command()
@click.option("--burst", is_flag=True, help="One pass, then exit.")
def scheduler(burst: bool) -> None:
    """Run the scheduler: cron entries and the reconciler, every few seconds."""
    from schedules.process import run_scheduler

    run_scheduler(_runtime(), burst=burst)


@main.group()
def schedules() -> None:
    """The cron schedules (synced into rq-scheduler by `triage scheduler`)."""


@schedules.command("list")
def list_schedules() -> None:
    """Every schedule: id, cron (UTC), kind, next run, last outcome."""
    from schedules import sync
    from schedules.process import all_entries, build_scheduler

    runtime = _runtime()
    with runtime.sessions.begin() as session:
        found = sync.views(session, build_scheduler(runtime), all_entries(runtime))
    for v in found:
        next_run = v.next_run_at.isoformat() if v.next_run_at else "not synced"
        click.echo(f"{v.id:<28} {v.cron:<16} {v.kind:<40} next {next_run}  last {v.last_status or '-'}")


@schedules.command("sync")
def sync_schedules() -> None:
    """Sync the catalogue into rq-scheduler now (the scheduler also does it every minute)."""
    from schedules import sync
    from schedules.process import all_entries, build_scheduler

    runtime = _runtime()
    changed, removed = sync.sync(build_scheduler(runtime), all_entries(runtime))
    click.echo(f"{changed} added or replaced, {removed} removed")


@main.command()
def mllp() -> None:
    """Run the HL7 MLLP listener (TRIAGE_MLLP_HOST:TRIAGE_MLLP_PORT); SIGTERM drains it."""
    from workers.mllp import run_listener

    run_listener(_runtime(pool_size=8))


@main.command()
def reconcile() -> None:
    """Enqueue ledger work that Redis lost, and recover jobs of dead workers (one pass)."""
    from workers.reconciler import reconciler_for

    reconciler = reconciler_for(_runtime())
    losses = reconciler.restore_losses()
    reconciler.recover_orphans()  # first sight of missing leases
    time.sleep(reconciler.lease_seconds / 2)
    orphans = reconciler.recover_orphans()
    click.echo(f"re-enqueued {losses} lost job(s), recovered {orphans} orphaned job(s)")


@main.group()
def dlq() -> None:
    """Dead letters: jobs that failed permanently or ran out of attempts."""


@dlq.command("list")
@click.option("--queue", default=None)
@click.option("--kind", default=None)
@click.option("--error", default=None, help="Error type, e.g. PermanentError.")
def dlq_list(queue: str | None, kind: str | None, error: str | None) -> None:
    """Dead jobs grouped by queue, kind and error type."""
    from app.services.operations import dead_letter_groups

    with _runtime().sessions() as session:
        groups = dead_letter_groups(session, queue=queue, kind=kind, error=error)
    click.echo("count\tqueue\tkind\terror\tids")
    for g in groups:
        click.echo(f"{g.count}\t{g.queue}\t{g.kind}\t{g.error_type}\t{g.oldest_id}..{g.newest_id}")


@dlq.command("show")
@click.argument("job_id", type=int)
def dlq_show(job_id: int) -> None:
    """A dead job's error, traceback, arguments and attempts."""
    from app.services.jobs import JobNotFoundError
    from app.services.operations import dead_letter

    with _runtime().sessions() as session:
        try:
            job, attempts = dead_letter(session, job_id)
        except JobNotFoundError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"job {job.id} {job.kind} on {job.queue}: {job.attempts}/{job.max_attempts} attempts")
        click.echo(f"arguments: {job.arguments}")
        click.echo(f"error: {job.last_error_type}: {job.last_error_message}")
        for a in attempts:
            click.echo(f"  attempt {a.attempt} {a.outcome} by {a.worker} at {a.finished_at:%Y-%m-%d %H:%M:%S} "
                       f"{a.error_type or ''}")
        click.echo(job.last_error_traceback or "")


@dlq.command("requeue")
@click.argument("job_ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Every dead job matching the filters.")
@click.option("--queue", default=None)
@click.option("--kind", default=None)
@click.option("--error", default=None)
def dlq_requeue(job_ids: tuple[int, ...], everything: bool, queue: str | None, kind: str | None,
                error: str | None) -> None:
    """Run dead jobs again with a fresh set of attempts (ids, or --all with filters)."""
    from app.services.jobs import JobNotFoundError, JobStateError, requeue_dead
    from app.services.operations import dead_letter_ids

    runtime = _runtime()
    if everything:
        with runtime.sessions() as session:
            job_ids = tuple(dead_letter_ids(session, queue=queue, kind=kind, error=error))
    elif not job_ids:
        raise click.UsageError("give job ids, or --all")
    failed = 0
    with click.progressbar(job_ids, label=f"requeueing {len(job_ids)} job(s)") as bar:
        for job_id in bar:
            try:
                with runtime.sessions.begin() as session:
                    requeue_dead(session, job_id)
                    _audited(session, "dead_letter.requeue", "Job", job_id)
            except (JobNotFoundError, JobStateError) as exc:
                click.echo(f"\n{exc}", err=True)
                failed += 1
    click.echo(f"requeued {len(job_ids) - failed}, failed {failed}")
    sys.exit(1 if failed else 0)


@dlq.command("purge")
@click.argument("job_ids", nargs=-1, type=int, required=True)
@click.option("--actor", default=lambda: f"cli:{getpass.getuser()}", help="Who purges (recorded).")
def dlq_purge(job_ids: tuple[int, ...], actor: str) -> None:
    """Give up on dead jobs for good (cancelled, removed from RQ; recorded with the actor)."""
    from app.services.jobs import JobNotFoundError, JobStateError
    from app.services.operations import forget_failed, purge_dead_letter

    runtime = _runtime()
    failed = 0
    with click.progressbar(job_ids, label="purging") as bar:
        for job_id in bar:
            try:
                with runtime.sessions.begin() as session:
                    queue = purge_dead_letter(session, job_id, actor=actor)
                    _audited(session, "dead_letter.purge", "Job", job_id, actor=actor)
                forget_failed(runtime.redis, job_id, queue)
            except (JobNotFoundError, JobStateError) as exc:
                click.echo(f"\n{exc}", err=True)
                failed += 1
    sys.exit(1 if failed else 0)


@main.group(invoke_without_command=True)
@click.pass_context
def queues(ctx: click.Context) -> None:
    """Queue backlogs and workers; `pause`/`resume` a queue."""
    if ctx.invoked_subcommand is not None:
        return
    from app.services.operations import queue_states, worker_states

    runtime = _runtime()
    with runtime.sessions() as session:
        states = queue_states(session, runtime.redis)
    click.echo("queue\twaiting\trunning\tscheduled\tfailed\tdead\toldest_s\tpaused")
    for q in states:
        oldest = f"{q.oldest_waiting_seconds:.0f}" if q.oldest_waiting_seconds is not None else "-"
        click.echo(f"{q.name}\t{q.waiting}\t{q.running}\t{q.scheduled}\t{q.failed}\t{q.dead}\t{oldest}\t"
                   f"{'yes' if q.paused else 'no'}")
    for w in worker_states(runtime.redis):
        click.echo(f"worker {w.name} pid {w.pid} on {w.hostname}: {w.state} {','.join(w.queues)} "
                   f"{w.current_job or ''}")


@queues.command("pause")
@click.argument("name")
def queues_pause(name: str) -> None:
    """Workers stop taking this queue's jobs (the API still accepts them)."""
    from app.services.operations import set_paused

    set_paused(_runtime().redis, name, True)
    click.echo(f"{name} paused")


@queues.command("resume")
@click.argument("name")
def queues_resume(name: str) -> None:
    """Workers take this queue's jobs again."""
    from app.services.operations import set_paused

    set_paused(_runtime().redis, name, False)
    click.echo(f"{name} resumed")


@main.group()
def clients() -> None:
    """API clients and their keys."""


@clients.command("create")
@click.option("--org", required=True, help="Organisation name (created if new).")
@click.option("--name", default="api", show_default=True)
@click.option("--scopes", required=True, help="Comma-separated, e.g. jobs:read,jobs:write or admin.")
def clients_create(org: str, name: str, scopes: str) -> None:
    """Create a client; its key is printed once and never stored."""
    from app.services.clients import UnknownScopeError, create_client
    from app.services.organisations import ensure_organisation

    runtime = _runtime()
    try:
        with runtime.sessions.begin() as session:
            organisation = ensure_organisation(session, org)
            client, key = create_client(session, organisation_id=organisation.id, name=name,
                                        scopes=[s.strip() for s in scopes.split(",") if s.strip()])
            _audited(session, "api_client.create", "ApiClient", client.id, organisation_id=organisation.id)
    except UnknownScopeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"client {client.id} for {org} ({','.join(client.scopes)})", err=True)
    click.echo(key)


@clients.command("revoke")
@click.argument("client_id", type=int)
def clients_revoke(client_id: int) -> None:
    """Revoke a client's key at once."""
    from app.services.clients import revoke_client

    with _runtime().sessions.begin() as session:
        if not revoke_client(session, client_id):
            raise click.ClickException(f"no active client {client_id}")
        _audited(session, "api_client.revoke", "ApiClient", client_id)
    click.echo(f"client {client_id} revoked")


@clients.command("list")
def clients_list() -> None:
    """Every client: id, organisation, name, scopes, revoked."""
    from app.services.clients import list_clients

    with _runtime().sessions() as session:
        for c in list_clients(session):
            click.echo(f"{c.id}\t{c.organisation_id}\t{c.name}\t{','.join(c.scopes)}\t"
                       f"{'revoked' if c.revoked else 'active'}")


@main.group()
def demo() -> None:
    """A demo organisation to try the API with."""


#: What a demo key may do: set up the clinic, record and read administrations, follow its jobs.
DEMO_SCOPES = ("clinical:read", "clinical:write", "administrations:read", "administrations:write", "jobs:read")


@demo.command("seed")
@click.option("--org", default="Demo School District", show_default=True)
def demo_seed(org: str) -> None:
    """Create the demo organisation (once) and print a new API key for it."""
    from app.services.clients import create_client
    from app.services.demo import seed

    with _runtime().sessions.begin() as session:
        created = seed(session, name=org)
        _, key = create_client(session, organisation_id=created.organisation_id, name="demo",
                               scopes=list(DEMO_SCOPES))
    made = ", ".join(f"{n} {what}" for what, n in created.counts.items()) or "already seeded, nothing added"
    click.echo(f"{org} (organisation {created.organisation_id}): {made}", err=True)
    click.echo(key)


@main.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations (the `release` process)."""
    from app.migrate import upgrade

    upgrade(Settings.database_url_from_env(), revision)


@main.group()
def keys() -> None:
    """Encryption keys for secrets stored in PostgreSQL (TRIAGE_ENCRYPTION_KEYS)."""


@keys.command("generate")
def generate_key() -> None:
    """Print a new key; put it first in TRIAGE_ENCRYPTION_KEYS (keep the old ones after it)."""
    from app.secrets_at_rest import generate_key as new_key

    click.echo(new_key())


main.add_command(backup)
main.add_command(restore)
main.add_command(audit)

if __name__ == "__main__":
    main()
