#!/usr/bin/env bash
# Time the README's two set-up commands as a new user runs them: a fresh
# clone, an empty CARGO_TARGET_DIR, then `./examples/demo/run` and
# `cargo test`, each timed, with the total against the goal of 4 minutes.
#
# Usage: bench/setup.sh [REPOSITORY]   (default: this checkout; its committed
#        HEAD is what gets cloned, not uncommitted changes)
# Besides wall time it reports the CPU time (user + system) the commands and
# their children used: on a machine shared with other work, CPU time / cores
# is what the same commands take on an idle machine of this kind.
# Crates already downloaded to ~/.cargo/registry are reused (a first machine
# also downloads them once). The stack the demo leaves running is removed
# afterwards (untimed), and so is the clone (SETUP_KEEP=1 keeps it).
set -euo pipefail
src="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
goal=240

work="$(mktemp -d "${TMPDIR:-/tmp}/de-build-setup.XXXXXX")"
finish() {
  if [ -n "${SETUP_KEEP:-}" ]; then echo "setup: kept $work"; else rm -rf "$work"; fi
}
trap finish EXIT
echo "setup: cloning $src into $work/repo (target dir $work/target, empty)"
git clone -q "$src" "$work/repo"
export CARGO_TARGET_DIR="$work/target"
cd "$work/repo"
echo "setup: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before"

now() { date +%s%N; }
# CPU time (user + system, ns) of this shell's finished children so far.
# `times` must run in this shell (in $(...) it would see the subshell's).
child_cpu() {
  times >"$work/times"
  awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.0f", ((u[1] + s[1]) * 60 + u[2] + s[2]) * 1e9 }' "$work/times"
}
secs() { awk -v ns="$1" 'BEGIN { printf "%.1f", ns / 1e9 }'; }

# timed NAME LOG COMMAND...: run it, output shown and kept in LOG.
timed() {
  local name="$1" log="$2"
  shift 2
  echo "setup: running \`$*\` (output also in $log)"
  local t0 rc=0
  t0=$(now)
  child_cpu >"$work/c0"
  "$@" 2>&1 | tee "$log" || rc=$?
  elapsed=$(($(now) - t0))
  child_cpu >"$work/c1"
  cpu=$(($(cat "$work/c1") - $(cat "$work/c0")))
  echo "setup: \`$*\` took $(secs "$elapsed") s, CPU $(secs "$cpu") s (exit $rc)"
  [ "$rc" -eq 0 ] || { echo "setup: $name failed; see $log"; exit "$rc"; }
}

timed demo "$work/demo.log" ./examples/demo/run
demo_ns=$elapsed demo_cpu=$cpu
# What the demo left running (nothing under CI, where it cleans by itself).
clean="$(sed -n 's/^remove everything the demo started: *//p' "$work/demo.log" | tail -1)"
[ -z "$clean" ] || "$clean" >/dev/null
timed tests "$work/test.log" cargo test
test_ns=$elapsed test_cpu=$cpu

total=$((demo_ns + test_ns))
total_cpu=$((demo_cpu + test_cpu))
cores=$(nproc)
echo
echo "setup: load average $(cut -d' ' -f1-3 /proc/loadavg) after"
printf 'setup:                      wall s    CPU s\n'
printf 'setup: ./examples/demo/run %7s  %7s\n' "$(secs "$demo_ns")" "$(secs "$demo_cpu")"
printf 'setup: cargo test          %7s  %7s\n' "$(secs "$test_ns")" "$(secs "$test_cpu")"
printf 'setup: total               %7s  %7s   (goal <= %d s wall: %s)\n' "$(secs "$total")" \
  "$(secs "$total_cpu")" "$goal" "$([ "$total" -le $((goal * 1000000000)) ] && echo met || echo MISSED)"
printf 'setup: CPU / %d cores = %s s: the least wall time on an idle machine of this kind\n' \
  "$cores" "$(secs $((total_cpu / cores)))"
