#!/usr/bin/env bash
# Benchmark: `de-build check` (offline) on the bundled example. Goal: < 10 ms median.
# Prints hyperfine's table and the median in ms.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v hyperfine >/dev/null || { apt-get update -q && apt-get install -y -q hyperfine; }
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
proj=$(mktemp -d); trap 'rm -rf "$proj"' EXIT
cp "$root"/{de-example.env,apps.json,compose-main.yaml} "$proj/"
mkdir -p "$proj/images/custom" && cp "$root/images/custom/Containerfile" "$proj/images/custom/"
sed 's/^DE_MACRS_PAT=.*/DE_MACRS_PAT=bench-token-0000/' "$root/de-example.env" > "$proj/.env"
hyperfine -N --warmup 20 --runs 200 --export-json "$proj/h.json" \
  "$root/target/release/de-build --project-dir $proj check"
python3 -c "import json,sys; r=json.load(open('$proj/h.json'))['results'][0]; print(f'check median: {r[\"median\"]*1000:.2f} ms (goal < 10 ms)')"
