#!/usr/bin/env bash
# A shared MLflow tracking server for cluster sweeps: a PostgreSQL backend store (a scratch database
# cluster of its own, Debian's `postgresql`) and an artifact folder, behind `mlflow server`, which the
# jobs reach over HTTP (MLflow's reference setup for teams; many jobs writing one SQLite file on a
# network disk is what SQLite's documentation warns against).
#
#   scripts/tracking_server.sh start DIR   database in DIR/postgres, artifacts in DIR/artifacts (put
#                                          DIR on a disk the server host keeps); waits until the server
#                                          answers and prints `export MLFLOW_TRACKING_URI=http://HOST:PORT`
#   scripts/tracking_server.sh stop DIR    stops the server and the database (their files are kept)
#
# Settings (environment): TRACKING_HOST (default 127.0.0.1; 0.0.0.0 to serve a cluster's nodes, then
# jobs use http://<this host>:PORT), TRACKING_PORT (5000), PGPORT (15432), PYTHON (the interpreter
# with mlflow and the `server` extra, psycopg: default `python`). As root, the database runs as the
# `postgres` user (PostgreSQL refuses root); its password is generated into DIR/pgpass (mode 600).
# Run it again on the same DIR to restart with the same data.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$(realpath -m "$2")
host=${TRACKING_HOST:-127.0.0.1}
port=${TRACKING_PORT:-5000}
pgport=${PGPORT:-15432}
python=${PYTHON:-python}
pgdata=$dir/postgres

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pgbin" ] && command -v pg_ctl >/dev/null; then pgbin=$(dirname "$(command -v pg_ctl)"); fi

as_db_user() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- env PGPASSFILE="$PGPASSFILE" "$@"; else "$@"; fi
}

# the database's password, in libpq's password file (read by psql, createdb and the server's psycopg):
# the database accepts TCP connections with it only (scram-sha-256), not from any local user
export PGPASSFILE=$dir/pgpass

is_ours() {  # a pid file's process is still the program named (not a pid reused after a reboot)
    [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "$2"
}

stop() {
    if [ -f "$dir/mlflow.pid" ]; then
        pid=$(cat "$dir/mlflow.pid")
        if is_ours "$pid" "mlflow server"; then
            kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            is_ours "$pid" "mlflow server" && kill -9 -- "-$pid" 2>/dev/null || true
        fi
        rm -f "$dir/mlflow.pid"
    fi
    if [ -n "$pgbin" ] && [ -f "$pgdata/postmaster.pid" ]; then
        as_db_user "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null || true
    fi
}

start() {
    [ -n "$pgbin" ] || { echo "PostgreSQL is not installed: apt-get install -y postgresql" >&2; exit 3; }
    "$python" -c "import mlflow, psycopg" 2>/dev/null || {
        echo "$python lacks mlflow or psycopg: pip install -e '.[server]'" >&2
        exit 3
    }
    stop
    mkdir -p "$dir/artifacts" "$dir/socket"
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$dir"; then
        echo "the postgres user cannot reach $dir (a folder above it is closed to others): choose another" >&2
        exit 3
    fi
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir/socket"; fi
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        mkdir -p "$pgdata"
        password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
        (umask 077 && echo "$password" >"$dir/pgpassword" && echo "127.0.0.1:*:*:mlflow:$password" >"$PGPASSFILE")
        if [ "$(id -u)" -eq 0 ]; then chown postgres "$pgdata" "$dir/pgpassword" "$PGPASSFILE"; fi
        as_db_user "$pgbin/initdb" -D "$pgdata" -U mlflow -A scram-sha-256 --pwfile="$dir/pgpassword" \
            --no-instructions >"$dir/initdb.log"
        rm -f "$dir/pgpassword"
    fi
    as_db_user "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w \
        -o "-h 127.0.0.1 -p $pgport -k $dir/socket" start >/dev/null
    if ! as_db_user "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U mlflow -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" | grep -q 1; then
        as_db_user "$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U mlflow mlflow
    fi
    # its own process group, so that stop ends the server's workers with it
    setsid "$python" -m mlflow server \
        --backend-store-uri "postgresql://mlflow@127.0.0.1:$pgport/mlflow" \
        --artifacts-destination "$dir/artifacts" \
        --host "$host" --port "$port" --workers 2 >"$dir/mlflow.log" 2>&1 &
    echo $! >"$dir/mlflow.pid"
    uri="http://$([ "$host" = 0.0.0.0 ] && hostname -f || echo "$host"):$port"
    for _ in $(seq 240); do
        if "$python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health', timeout=2)" \
            2>/dev/null; then
            echo "export MLFLOW_TRACKING_URI=$uri"
            return 0
        fi
        kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null || break
        sleep 0.5
    done
    echo "the tracking server did not answer; its log: $dir/mlflow.log" >&2
    tail -n 5 "$dir/mlflow.log" >&2 || true
    stop
    exit 1
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
