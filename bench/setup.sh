#!/usr/bin/env bash
# Time the README's two set-up commands as a new user runs them: a fresh
# clone, an empty CARGO_TARGET_DIR, then `./examples/demo/run` and
# `cargo test`, each timed, with the total against the goal of 4 minutes.
#
# Usage: bench/setup.sh [REPOSITORY]   (default: this checkout; its committed
#        HEAD is what gets cloned, not uncommitted changes)
# Crates already downloaded to ~/.cargo/registry are reused (a first machine
# also downloads them once). The stack the demo leaves running is removed
# afterwards (untimed), and so is the clone (SETUP_KEEP=1 keeps it).
set -euo pipefail
src="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
goal=240

work="$(mktemp -d "${TMPDIR:-/tmp}/de-build-setup.XXXXXX")"
echo "setup: cloning $src into $work/repo (target dir $work/target, empty)"
git clone -q "$src" "$work/repo"
export CARGO_TARGET_DIR="$work/target"
cd "$work/repo"
echo "setup: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before"

now() { date +%s%N; }
secs() { awk -v ns="$1" 'BEGIN { printf "%.1f", ns / 1e9 }'; }

# timed NAME LOG COMMAND...: run it, output shown and kept in LOG.
timed() {
  local name="$1" log="$2"
  shift 2
  echo "setup: running \`$*\` (output also in $log)"
  local t0 rc=0
  t0=$(now)
  "$@" 2>&1 | tee "$log" || rc=$?
  elapsed=$(($(now) - t0))
  echo "setup: \`$*\` took $(secs "$elapsed") s (exit $rc)"
  [ "$rc" -eq 0 ] || { echo "setup: $name failed; see $log"; exit "$rc"; }
}

timed demo "$work/demo.log" ./examples/demo/run
demo_ns=$elapsed
timed tests "$work/test.log" cargo test
test_ns=$elapsed

# What the demo left running (nothing under CI, where it cleans by itself).
clean="$(sed -n 's/^remove everything the demo started: *//p' "$work/demo.log" | tail -1)"
[ -z "$clean" ] || "$clean" >/dev/null

total=$((demo_ns + test_ns))
echo
echo "setup: load average $(cut -d' ' -f1-3 /proc/loadavg) after"
printf 'setup: ./examples/demo/run %6s s\n' "$(secs "$demo_ns")"
printf 'setup: cargo test          %6s s\n' "$(secs "$test_ns")"
printf 'setup: total               %6s s  (goal <= %d s: %s)\n' "$(secs "$total")" "$goal" \
  "$([ "$total" -le $((goal * 1000000000)) ] && echo met || echo MISSED)"
if [ -n "${SETUP_KEEP:-}" ]; then echo "setup: kept $work"; else rm -rf "$work"; fi
