#!/usr/bin/env bash
# Benchmark: DE_TARGET=swarm on a real three-node swarm (three engines in
# containers on this machine, see tests/support/cluster.rs), side by side
# with the same release on one host.
#  - failed requests during rolling updates without migrate (`deploy
#    --no-migrate`), two web replicas behind a load balancer on loopback, a
#    GET every 50 ms: goal 0
#  - wall time of a deploy with migrate (maintenance, drain, backup, migrate
#    job, rolling update) on the swarm vs the same deploy with compose on
#    this host
# BENCH_ROUNDS (default 3) rolling updates. Needs what the tests need
# (.ci/run installs it); the first run builds the node image (debootstrap).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
BENCH_ROUNDS="${BENCH_ROUNDS:-3}" cargo test --quiet --test integration -- --ignored --exact swarm::bench_swarm --nocapture 2>&1 \
  | grep -E '^(swarm|one host|wall time)|panicked|FAILED|error' || { echo "bench failed: run it with --nocapture to see why"; exit 1; }
