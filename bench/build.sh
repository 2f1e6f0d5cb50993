#!/usr/bin/env bash
# Benchmark: de-build build vs the docker CLI (Debian's 20.10, /usr/bin/docker,
# DOCKER_BUILDKIT=1, apps.json as --secret), side by side in one run.
#  1. cached rebuild of the demo: wall time, ratio de-build / docker CLI (goal <= 1.0x).
#     de-build's command also runs the checks and writes a manifest; its smoke
#     test is reused when the layers are those of a release that passed.
#  2. peak memory (max RSS) of a build whose context holds a 200 MB file.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
docker_cli=${DOCKER_CLI:-/usr/bin/docker}
runs=${RUNS:-10}
command -v hyperfine >/dev/null || { apt-get update -q && apt-get install -y -q hyperfine; }
[ -x /usr/bin/time ] || { apt-get update -q && apt-get install -y -q time; }
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
de="$root/target/release/de-build"

work=$(mktemp -d)
repo="de-build-bench/demo-$$"
cleanup() { docker image ls -q "$repo" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
cp "$root"/examples/demo/{de-example.env,apps.json,Containerfile,bench,patches.txt,compose.yaml} "$work/"
mkdir -p "$work/rootfs" && cp /bin/busybox "$work/rootfs/"
sed -e "s#^DE_IMAGE=.*#DE_IMAGE=$repo#" "$root/examples/demo/demo.env" > "$work/.env"
# What the manual procedure feeds the CLI: apps.json with the token filled in, on disk.
sed 's/\${DE_MACRS_PAT}/demo-token-not-a-real-secret/g' "$work/apps.json" > "$work/.apps-injected.json"
cache_bust=$(DE_SITE_VERSION=0.0.1 "$de" --json --project-dir "$work" build --offline --dry-run | python3 -c 'import json,sys; print(json.load(sys.stdin)["build_args"]["CACHE_BUST"])')
cli_build() {
  DOCKER_BUILDKIT=1 "$docker_cli" build -q --secret "id=apps_json,src=$work/.apps-injected.json" \
    --build-arg FRAPPE_PATH=https://github.com/frappe/frappe --build-arg FRAPPE_BRANCH=version-15 \
    --build-arg PYTHON_VERSION=3.11.6 --build-arg NODE_VERSION=18.18.2 --build-arg "CACHE_BUST=$cache_bust" \
    -t "$repo:cli" -f "$work/Containerfile" "$work" >/dev/null
}
export -f cli_build; export docker_cli work cache_bust repo
# Warm the cache with both tools.
DE_SITE_VERSION=0.0.1 "$de" --project-dir "$work" -q build --offline >/dev/null
cli_build

echo "== cached rebuild of the demo ($runs runs each)"
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/build.json" \
  -n de-build "bash -c 'DE_SITE_VERSION=1.0.\$(date +%s%N) $de --project-dir $work -q build --offline'" \
  -n docker-cli "bash -c cli_build"
python3 - "$work/build.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
de, cli = r["de-build"]["median"], r["docker-cli"]["median"]
print(f"whole command: de-build {de*1000:.0f} ms, docker CLI {cli*1000:.0f} ms -> ratio {de/cli:.2f}x (goal <= 1.0x)")
PY

echo "== peak memory with a 200 MB file in the context"
head -c 200000000 /dev/urandom > "$work/big.bin"
de_rss=$( { DE_SITE_VERSION="3.0.$(date +%s%N)" /usr/bin/time -f '%M' "$de" --project-dir "$work" -q build --offline >/dev/null; } 2>&1 | tail -1)
cli_rss=$( { /usr/bin/time -f '%M' bash -c cli_build; } 2>&1 | tail -1)
python3 -c "d,c=$de_rss,$cli_rss; print(f'max RSS: de-build {d/1024:.1f} MiB, docker CLI {c/1024:.1f} MiB -> ratio {d/c:.2f}x (goal <= 1.0x)')"
