# One image for every Triage process (web, workers, scheduler, release); see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/triage

# Dependencies first, in their own layer, so code changes don't reinstall them.
COPY setup.cfg pyproject.toml ./
RUN pip install .

# Editable install of the code: app/migrate.py finds alembic.ini and migrations/ beside the
# packages, so they are run from this directory rather than copied into site-packages.
COPY . .
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 triage

USER triage
EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "app.wsgi:app"]
