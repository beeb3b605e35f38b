"""The `triage` command: workers, scheduler, reconciler, dead letters, database."""

from __future__ import annotations

import logging
import sys
import time

import click
from sqlalchemy import select

from app.config import Settings
from app.runtime import Runtime


def _runtime(pool_size: int = 5) -> Runtime:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(process)d %(name)s %(message)s",
    )
    return Runtime.build(settings, pool_size=pool_size)


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
    limit = max_jobs if max_jobs is not None else runtime.settings.worker_max_jobs
    sys.exit(run_worker(runtime, names, burst=burst, max_jobs=limit))


@main.command()
@click.option("--burst", is_flag=True, help="One pass, then exit.")
def scheduler(burst: bool) -> None:
    """Run the scheduler: cron entries and the reconciler, every few seconds."""
    from schedules.process import run_scheduler

    run_scheduler(_runtime(), burst=burst)


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
def dlq_list(queue: str | None, kind: str | None) -> None:
    """List dead jobs: id, queue, kind, attempts, error type."""
    from app.models import Job
    from app.services.jobs import dead_job_ids

    runtime = _runtime()
    with runtime.sessions() as session:
        ids = dead_job_ids(session, queue=queue, kind=kind)
        for job in session.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id)):
            click.echo(f"{job.id}\t{job.queue}\t{job.kind}\t{job.attempts}/{job.max_attempts}\t{job.last_error_type}")


@dlq.command("requeue")
@click.argument("job_ids", nargs=-1, type=int, required=True)
def dlq_requeue(job_ids: tuple[int, ...]) -> None:
    """Run dead jobs again with a fresh set of attempts."""
    from app.services.jobs import JobNotFoundError, JobStateError, requeue_dead

    runtime = _runtime()
    failed = False
    with click.progressbar(job_ids, label="requeueing") as bar:
        for job_id in bar:
            try:
                with runtime.sessions.begin() as session:
                    requeue_dead(session, job_id)
            except (JobNotFoundError, JobStateError) as exc:
                click.echo(f"\n{exc}", err=True)
                failed = True
    sys.exit(1 if failed else 0)


@main.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations (the `release` process)."""
    from app.migrate import upgrade

    upgrade(Settings.from_env().database_url, revision)


if __name__ == "__main__":
    main()
