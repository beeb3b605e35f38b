#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer.
#
#   scripts/services.sh [--database NAME]
#
# DATABASE_URL / REDIS_URL set: wait for those servers, nothing else.
# Unset: use the local servers (127.0.0.1:5432, user postgres, trust auth; 127.0.0.1:6379),
# starting them - and installing Debian's packages - when they don't answer. A server that
# already runs is never stopped or reconfigured. --database NAME creates NAME on the local
# PostgreSQL if it is missing. Safe to run any number of times.
set -euo pipefail

TIMEOUT="${SERVICES_TIMEOUT:-30}"
PG=(-h 127.0.0.1 -p 5432 -U postgres)
REDIS=(-h 127.0.0.1 -p 6379)

die() { echo "services.sh: $*" >&2; exit 1; }
say() { echo "services.sh: $*" >&2; }

database=""
while [ $# -gt 0 ]; do
  case "$1" in
    --database) [ $# -ge 2 ] || die "--database needs a name"; database="$2"; shift 2 ;;
    --database=*) database="${1#*=}"; shift ;;
    -h|--help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
if [ -n "$database" ] && ! [[ "$database" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
  die "invalid database name: $database"
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $*"
  fi
}

apt_install() {
  command -v apt-get >/dev/null || die "$* not installed and no apt-get here: install it by hand"
  say "installing $* (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# wait_for WHAT COMMAND...: retry COMMAND until it succeeds or TIMEOUT seconds pass.
wait_for() {
  local what="$1" deadline=$((SECONDS + TIMEOUT))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what did not answer within ${TIMEOUT}s"
    sleep 0.5
  done
}

pg_url_ready() { pg_isready -q -d "$pg_url"; }
pg_local_ready() { pg_isready -q "${PG[@]}"; }
redis_url_ready() { [ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" = PONG ]; }
redis_local_ready() { [ "$(redis-cli "${REDIS[@]}" ping 2>/dev/null)" = PONG ]; }

# The PostgreSQL cluster on port 5432 ("VERSION NAME"), if there is one.
pg_cluster() { pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }'; }

start_postgres() {
  local fresh="" version name hba
  command -v pg_lsclusters >/dev/null || { apt_install postgresql; fresh=1; }
  if [ -z "$(pg_cluster)" ]; then
    [ -z "$(pg_lsclusters -h 2>/dev/null)" ] || die "no PostgreSQL cluster on port 5432 (see pg_lsclusters)"
    version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
    say "creating PostgreSQL $version cluster main"
    as_root pg_createcluster --port 5432 "$version" main
    fresh=1
  fi
  read -r version name <<<"$(pg_cluster)"
  if [ -n "$fresh" ]; then
    hba="/etc/postgresql/$version/$name/pg_hba.conf"
    as_root sed -ri 's#^(host\s+all\s+all\s+(127\.0\.0\.1/32|::1/128)\s+)\S+#\1trust#' "$hba"
  fi
  if as_root pg_ctlcluster "$version" "$name" status >/dev/null 2>&1; then
    # Running but not answering yet; reload only a cluster this run set up (new pg_hba.conf).
    [ -z "$fresh" ] || as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload
  else
    say "starting PostgreSQL $version/$name"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start
  fi
}

start_redis() {
  command -v redis-server >/dev/null || apt_install redis-server
  redis_local_ready && return  # the package may have started one
  say "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
}

create_database() {
  local exists
  exists="$(psql "${PG[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")"
  [ "$exists" = 1 ] && return
  say "creating database $database"
  # A concurrent run may create it first; only fail if it is still missing.
  createdb "${PG[@]}" "$database" 2>/dev/null ||
    [ "$(psql "${PG[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" = 1 ] ||
    die "could not create database $database"
}

# PostgreSQL
if [ -n "${DATABASE_URL:-}" ]; then
  command -v pg_isready >/dev/null || apt_install postgresql-client
  pg_url="$(sed -E 's#^postgres(ql)?\+[A-Za-z0-9_]+://#postgresql://#' <<<"$DATABASE_URL")"  # drop +psycopg2
  wait_for "PostgreSQL at DATABASE_URL" pg_url_ready
  [ -z "$database" ] || say "DATABASE_URL is set: not creating $database (the URL's server is yours to manage)"
else
  command -v pg_isready >/dev/null || apt_install postgresql
  pg_local_ready || start_postgres
  wait_for "PostgreSQL on 127.0.0.1:5432" pg_local_ready
  [ -z "$database" ] || create_database
fi

# Redis
if [ -n "${REDIS_URL:-}" ]; then
  case "$REDIS_URL" in
    redis://*|rediss://*)
      command -v redis-cli >/dev/null || apt_install redis-tools
      wait_for "Redis at REDIS_URL" redis_url_ready ;;
    *) say "cannot check a ${REDIS_URL%%://*} URL with redis-cli; assuming Redis is reachable" ;;
  esac
else
  redis_local_ready || start_redis
  wait_for "Redis on 127.0.0.1:6379" redis_local_ready
fi
