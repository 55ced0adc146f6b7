#!/usr/bin/env bash
# The disk-full test for longer than CTest runs it: a tiny experiment (pretraining, data, SFT with
# checkpoints, a sparse MoE, post-training, evaluation) whose outputs *and* run store live on a tmpfs
# of SIZE, for a sweep of sizes, so that the file system fills at a different write each time (a
# checkpoint's weights, its optimizer.pt, trainer_state.json, data files, the store's pages or WAL).
# For every size: the exit status is 0 or 1 (never a crash), a failure is exactly one
# "upcycle: error:" line, no *.tmp file or folder is left, every checkpoint under its final name
# loads (`upcycle inspect`), the store passes `upcycle runs check`, and no run stays "running".
# Needs a private mount namespace (unshare -m, as root).
#
#   bash scripts/disk_full.sh [FIRST_KB] [LAST_KB] [STEP_KB]     (defaults: 64 2048 64)
set -euo pipefail
cd "$(dirname "$0")/.."
first=${1:-64}
last=${2:-2048}
step=${3:-64}
build=${UPCYCLE_BUILD_DIR:-build/release}
cli=$(realpath "$build/app/upcycle")
work=$(mktemp -d /tmp/upcycle-diskfull.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/mnt"
cp tests/fixtures/experiments/disk_full_tiny.yaml "$work/tiny.yaml"
# Runs inside the namespace, with the tmpfs mounted; prints one result line.
cat > "$work/inner.sh" <<'INNER'
set -u
cli=$1; work=$2; size=$3
mount -t tmpfs -o size=${size}k tmpfs "$work/mnt" || exit 99
"$cli" run "$work/tiny.yaml" --out "$work/mnt/out" --db "$work/mnt/runs.db" > "$work/out.txt" 2> "$work/err.txt"
rc=$?
problems=""
case $rc in 0|1) ;; *) problems+=" exit=$rc";; esac
if [ $rc -ne 0 ]; then
  lines=$(wc -l < "$work/err.txt")
  head -c 16 "$work/err.txt" | grep -q "^upcycle: error: " || problems+=" not-our-error-form"
  [ "$lines" -eq 1 ] || problems+=" stderr-lines=$lines"
fi
tmps=$(find "$work/mnt" -name '*.tmp*' | wc -l)
[ "$tmps" -eq 0 ] && true || problems+=" tmp-left=$tmps"
ckpts=0
for c in $(find "$work/mnt" -type d -name 'checkpoint-*'); do
  ckpts=$((ckpts + 1))
  "$cli" inspect "$c" > /dev/null 2>&1 || problems+=" unloadable=${c#$work/mnt/}"
done
if [ -f "$work/mnt/runs.db" ]; then
  # On the full file system `runs check` may say it cannot read the store (exit 1: no room for its
  # -shm); the verdict that counts is the copy's, on a disk with room.
  "$cli" runs check --db "$work/mnt/runs.db" > /dev/null 2>&1; crc=$?
  if [ $crc -eq 1 ]; then
    rm -rf "$work/copy"; mkdir -p "$work/copy"; cp "$work/mnt"/runs.db* "$work/copy/" 2>/dev/null
    "$cli" runs check --db "$work/copy/runs.db" > /dev/null 2>&1; crc=$?
  fi
  [ $crc -eq 0 ] || problems+=" store-damaged"
  "$cli" runs list --db "$work/mnt/runs.db" 2>/dev/null | grep -qw running && problems+=" run-left-running"
fi
reason=$(head -1 "$work/err.txt" | sed 's/^upcycle: error: //' | cut -c1-90)
echo "${size} KiB rc=$rc checkpoints=$ckpts ${problems:-ok} ${reason:+| $reason}"
INNER
fails=0; n=0
for ((kb = first; kb <= last; kb += step)); do
  line=$(unshare -m --propagation private bash "$work/inner.sh" "$cli" "$work" "$kb") || {
    echo "cannot mount a tmpfs here (unshare -m needs root)"; exit 2; }
  echo "$line"
  n=$((n + 1))
  case "$line" in *" ok"*) ;; *) fails=$((fails + 1));; esac
done
echo "disk-full sweep: $n sizes, $fails with problems"
[ "$fails" -eq 0 ]
