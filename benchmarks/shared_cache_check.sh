#!/usr/bin/env bash
# Two users share one cache_dir (the README's advice on clusters): run as root on a scratch machine.
#
# Makes two users (mlc_alice, mlc_bob) in one group (mlc_lab) and a cache folder of that group with the
# setgid bit, as a cluster admin would. Each user works with umask 002 in a folder of their own:
#   1. alice runs the debug experiment: every entry is computed and written, group-writable;
#   2. bob runs the same command: every entry is reused (none computed), and his test metrics equal
#      alice's exactly;
#   3. bob runs another scenario seed: new entries, written by bob into the same folders;
#   4. alice reruns bob's seed: reused, the same metrics as bob's.
# Then the users and the group are removed. PYTHON is the project's interpreter (default .venv/bin/python);
# the folders that lead to it are given execute (traverse) permission for the run and set back after.
#
#   sudo bash benchmarks/shared_cache_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ "$(id -u)" = 0 ] || { echo "shared_cache_check: run as root (it makes two users)"; exit 2; }
WORK=$(mktemp -d /tmp/shared-cache-check.XXXXXX)
CACHE=$WORK/cache
USERS=(mlc_alice mlc_bob)
GROUP=mlc_lab

# every folder on the way to the interpreter and the project must be traversable by the two users
REAL=$(readlink -f "$PYTHON")
declare -A MODES=()
for path in "$REAL" "$ROOT"; do
    dir=$(dirname "$path")
    while [ "$dir" != / ]; do
        [ -n "${MODES[$dir]:-}" ] || MODES[$dir]=$(stat -c %a "$dir")
        dir=$(dirname "$dir")
    done
done
cleanup() {
    for dir in "${!MODES[@]}"; do chmod "${MODES[$dir]}" "$dir"; done
    for u in "${USERS[@]}"; do userdel "$u" 2>/dev/null || true; done
    groupdel "$GROUP" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for dir in "${!MODES[@]}"; do chmod o+x "$dir"; done
chmod -R o+rX "$ROOT" 2>/dev/null || true  # the source and the virtual environment, read-only

groupadd "$GROUP"
for u in "${USERS[@]}"; do
    useradd --no-create-home --gid "$GROUP" --shell /bin/bash "$u"
    mkdir -p "$WORK/$u" && chown "$u:$GROUP" "$WORK/$u"
done
mkdir -p "$CACHE" && chgrp "$GROUP" "$CACHE" && chmod 2775 "$CACHE"
chmod 755 "$WORK"

# run USER SEED: the debug experiment as USER with umask 002, in USER's folder; prints the log
run() {
    local user=$1 seed=$2
    runuser -u "$user" -- bash -c "umask 002 && cd '$WORK/$user' && export HOME='$WORK/$user' \
        MLFLOW_TRACKING_URI=sqlite:///'$WORK/$user'/mlflow.db && \
        '$PYTHON' -m mimo_l2o experiment=debug scenario.seed=$seed cache_dir='$CACHE' progress=false" 2>&1
}
ratio() { grep -oE "objective ratio +[0-9.]+" <<<"$1" | head -1 | tr -s " "; }
count() { grep -cE "$2" <<<"$1" || true; }
COMPUTING=": computing|: [0-9]+ chunks$"  # the log lines of an entry being made
fail() { echo "FAILED: $*"; exit 1; }

echo "== 1. mlc_alice, seed 0, empty cache"
first=$(run mlc_alice 0) || { echo "$first"; fail "alice's run"; }
computed=$(count "$first" "$COMPUTING")
echo "computed $computed entries; $(ratio "$first")"
[ "$computed" -gt 0 ] || fail "alice computed nothing"
bad=$(find "$CACHE" -type f ! -perm -g+rw | head -3)
[ -z "$bad" ] || fail "entries not group-read-writable: $bad"
find "$CACHE" -type f -printf '%M %u:%g %p\n' | sed "s|$CACHE/||" | head -4

echo "== 2. mlc_bob, seed 0: the same entries"
second=$(run mlc_bob 0) || { echo "$second"; fail "bob's run"; }
echo "computed $(count "$second" "$COMPUTING"), reused $(count "$second" "reusing the cached entry"); $(ratio "$second")"
[ "$(count "$second" "$COMPUTING")" = 0 ] || fail "bob computed entries alice had written"
[ "$(count "$second" "reusing the cached entry")" -gt 0 ] || fail "bob reused nothing"
[ "$(ratio "$first")" = "$(ratio "$second")" ] || fail "bob's metrics differ from alice's"

echo "== 3. mlc_bob, seed 1: new entries, written by bob"
third=$(run mlc_bob 1) || { echo "$third"; fail "bob's second run"; }
echo "computed $(count "$third" "$COMPUTING"); $(ratio "$third")"
[ "$(count "$third" "$COMPUTING")" -gt 0 ] || fail "bob's seed 1 computed nothing"
find "$CACHE" -type f -user mlc_bob -printf '%M %u:%g %p\n' | sed "s|$CACHE/||" | head -2

echo "== 4. mlc_alice, seed 1: bob's entries"
fourth=$(run mlc_alice 1) || { echo "$fourth"; fail "alice's second run"; }
echo "computed $(count "$fourth" "$COMPUTING"), reused $(count "$fourth" "reusing the cached entry"); $(ratio "$fourth")"
[ "$(count "$fourth" "$COMPUTING")" = 0 ] || fail "alice computed entries bob had written"
[ "$(ratio "$third")" = "$(ratio "$fourth")" ] || fail "alice's metrics differ from bob's"
echo "shared cache check passed: two uids, umask 002, one cache"
