#!/usr/bin/env bash
# aoe-target over an NBD server (nbdkit memory, Unix socket) against aoe-target over a file
# on tmpfs (served inline, as by default, and by 16 I/O threads, as NBD exports are), both measured by `aoe bench --write` across a veth pair (MTU 9000) between two
# private network namespaces, in the same run, REPS times each, alternating; prints the
# medians and the NBD/file ratio. Needs root, iproute2 and nbdkit.
#
#   cargo build --release -p aoe-cli && sudo benches/nbd-backend.sh [REPS] [SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
size=${2:-128M}
bin=${AOE_BIN_DIR:-target/release}
for p in "$bin/aoe" "$bin/aoe-target"; do
  [ -x "$p" ] || { echo "nbd-backend.sh: no $p; build with cargo build --release -p aoe-cli" >&2; exit 2; }
done
for t in ip nbdkit; do
  command -v "$t" >/dev/null || { echo "nbd-backend.sh: SKIP: needs $t"; exit 0; }
done
[ "$(id -u)" = 0 ] || { echo "nbd-backend.sh: SKIP: needs root"; exit 0; }

tag=$$
nt=aoenbdb-t-$tag ni=aoenbdb-i-$tag
work=$(mktemp -d /dev/shm/aoe-nbd-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$nt" 2>/dev/null || true
  ip netns del "$ni" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$nt"
ip netns add "$ni"
ip link add "nbt$tag" netns "$nt" mtu 9000 type veth peer name "nbi$tag" netns "$ni" mtu 9000
ip -n "$nt" link set "nbt$tag" up
ip -n "$ni" link set "nbi$tag" up
ip -n "$nt" link set lo up
ip -n "$ni" link set lo up

# One measurement: serve FILE-OR-URI as e1.0, run aoe bench, stop the target.
measure() {
  local what=$1; shift
  ip netns exec "$nt" "$bin/aoe-target" "$@" 1 0 "nbt$tag" "$what" 2>"$work/target.log" &
  local target=$!
  pids+=("$target")
  for _ in $(seq 100); do grep -q "e1.0 on" "$work/target.log" && break; sleep 0.1; done
  ip netns exec "$ni" "$bin/aoe" -i "nbi$tag" bench --write --size "$size" --seconds 2 e1.0 >"$work/bench.out"
  kill "$target"; wait "$target" 2>/dev/null || true
  # aoe bench's table: sequential read and write MB/s, random read IOPS at QD 1 and 32.
  awk '
    /sequential read/  { for (i = 1; i <= NF; i++) if ($(i+1) == "MB/s") r = $i }
    /sequential write/ { for (i = 1; i <= NF; i++) if ($(i+1) == "MB/s") w = $i }
    /QD 1 /  { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^IOPS/) q1 = $i }
    /QD 32 / { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^IOPS/) q32 = $i }
    END { print r, w, q1, q32 }' "$work/bench.out"
}

truncate -s 256M "$work/disk.img"
nbdkit -f --exit-with-parent -U "$work/nbd.sock" memory 256M &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/nbd.sock" ] && break; sleep 0.1; done
uri="nbd+unix:///?socket=$work/nbd.sock"

: >"$work/file.txt"; : >"$work/threads.txt"; : >"$work/nbd.txt"
for rep in $(seq "$reps"); do
  measure "$work/disk.img" >>"$work/file.txt"
  measure "$work/disk.img" --io-threads 16 >>"$work/threads.txt"
  measure "$uri" >>"$work/nbd.txt"
done
[ -n "${VERBOSE:-}" ] && cat "$work/bench.out" "$work/file.txt" "$work/threads.txt" "$work/nbd.txt"

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo "nbd-backend.sh: aoe bench --write --size $size over veth MTU 9000, median of $reps alternating runs"
echo "(the file served inline, as by default, and by 16 I/O threads as the NBD export is)"
printf '%-22s %10s %12s %10s %10s %10s\n' "measure" "file" "file, 16 thr" "NBD" "NBD/file" "NBD/16 thr"
col=1
for name in "sequential read MB/s" "sequential write MB/s" "random 4K QD1 IOPS" "random 4K QD32 IOPS"; do
  f=$(cut -d' ' -f$col "$work/file.txt" | median)
  t=$(cut -d' ' -f$col "$work/threads.txt" | median)
  n=$(cut -d' ' -f$col "$work/nbd.txt" | median)
  awk -v name="$name" -v f="$f" -v t="$t" -v n="$n" 'BEGIN {
    printf "%-22s %10.1f %12.1f %10.1f %9.0f%% %9.0f%%\n", name, f, t, n, (f > 0) ? 100 * n / f : 0, (t > 0) ? 100 * n / t : 0 }'
  col=$((col + 1))
done
