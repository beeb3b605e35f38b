"""gunicorn settings for the `web` process, read from the working directory by every launcher
(Procfile, Dockerfile, docker-compose.yml, bench/api_latency.py); `--bind` stays on their command
lines. See README "Processes and topology" for sizing."""

import os

#: Sync workers: each request is a short transaction, and a worker holds one PostgreSQL connection
#: at a time. More workers than cores help when the database is remote (they overlap its round trips).
workers = 2  # `--workers N` on a command line overrides it
#: SIGTERM: stop accepting, let in-flight requests finish for up to this long.
graceful_timeout = 10
#: The workers' heartbeat file is touched on every request: keep it in memory, not on a disk whose
#: metadata writes can stall (a container's overlay filesystem above all).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
