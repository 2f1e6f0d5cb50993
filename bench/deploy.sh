#!/usr/bin/env bash
# Benchmark: de-build deploy vs the seed's manual update, on the demo stack
# (frappe_docker's topology with the demo's door in front of the frontend:
# the probe goes through it with the site's Host), side by side in one run.
# A probe hits it every 20 ms.
#  - unreachable window (refused / 5xx other than 503): goal de-build <= 0.5x manual
#  - maintenance window (503): goal <= backup + migrate + 0.3 s (issue #13)
#  - rollback to the previous version with its image present: goal <= 5 s
#  - failed requests (neither 2xx nor the maintenance 503) during a deploy
#    that needs no migrate, and during a rollback: issue #13's goal is 0
# Manual procedure (seed 003): docker-compose down; docker-compose up -d;
# docker exec <backend> bench --site <site> migrate.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
de_bin="$root/target/release/de-build"
work=$(mktemp -d)
project="debench$$"
repo="de-build-bench/deploy-$$"
door="de-build-bench/door-$$:1"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port/api/method/ping"
cleanup() {
  docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker rm -f -v >/dev/null 2>&1 || true
  docker volume ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker volume rm >/dev/null 2>&1 || true
  docker network rm "${project}_default" >/dev/null 2>&1 || true
  docker image ls -q "$repo" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  docker rmi -f "$door" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cp "$root"/examples/demo/{de-example.env,apps.json,Containerfile,bench,patches.txt,style.css,compose.yaml} "$work/"
cp -r "$root/examples/demo/bin" "$root/examples/demo/overrides" "$root/examples/demo/door" "$work/"
export PROBE_HOST=demo.localhost
mkdir -p "$work/rootfs" && cp /bin/busybox "$work/rootfs/"
sed -e "s#^DE_IMAGE=.*#DE_IMAGE=$repo#" -e "s#^COMPOSE_PROJECT_NAME=.*#COMPOSE_PROJECT_NAME=$project#" \
    -e "s#^DE_HEALTH_URL=.*#DE_HEALTH_URL=$url#" -e "s#^DOOR_IMAGE=.*#DOOR_IMAGE=$door#" \
    "$root/examples/demo/demo.env" > "$work/.env"
docker build -q -t "$door" -f "$work/door/Containerfile" "$work" >/dev/null
export HTTP_PUBLISH_PORT=$port
de() { "$de_bin" --project-dir "$work" "$@"; }
for v in 1.0.0 1.1.0 1.2.0; do
  echo "demo.patches.v${v//./_}.bench" >> "$work/patches.txt"
  DE_SITE_VERSION=$v de -q build --offline >/dev/null
done
# 1.2.1: the same schema as 1.2.0 (a new stylesheet: new hashed bundle), so
# no migrate: it switches beside 1.2.0 through the door.
echo "/* release 1.2.1 */" >> "$work/style.css"
DE_SITE_VERSION=1.2.1 de -q build --offline >/dev/null
de -q deploy 1.0.0 >/dev/null

probe() { # probe OUT -- command...
  local out=$1; shift 2
  rm -f "$work/stop"
  python3 "$root/bench/probe.py" "$url" "$work/stop" "$out" & local pid=$!
  local t0; t0=$(date +%s.%N)
  "$@"
  python3 -c "import time; print(f'{time.time() - $t0:.2f}')" > "$out.secs"
  touch "$work/stop"; wait $pid
}

echo "== de-build deploy 1.0.0 -> 1.1.0"
probe "$work/de.json" -- de -q deploy 1.1.0
rec=$(ls -t "$work"/.de-build/deployments/*.json | head -1)

echo "== manual: down, up -d, bench migrate (1.1.0 -> 1.2.0, same stack)"
manual() {
  local f=(-f "$work/compose.yaml" -f "$work/overrides/compose.door.yaml")
  local env=(env CUSTOM_IMAGE="$repo" COMPOSE_PROJECT_NAME="$project" PULL_POLICY=never DOOR_IMAGE="$door")
  "${env[@]}" CUSTOM_TAG=1.1.0 docker-compose -p "$project" "${f[@]}" down >/dev/null 2>&1
  "${env[@]}" CUSTOM_TAG=1.2.0 docker-compose -p "$project" "${f[@]}" up -d >/dev/null 2>&1
  local c; c=$(docker ps -q --filter "label=com.docker.compose.project=$project" --filter label=com.docker.compose.service=backend)
  docker exec "$c" bench --site demo.localhost migrate >/dev/null
}
probe "$work/manual.json" -- manual

echo "== de-build deploy 1.2.0 (adopts the hand-run stack) then 1.2.1 (same schema: no migrate)"
de -q deploy 1.2.0 >/dev/null
door_id() { docker ps -q --filter "label=com.docker.compose.project=$project" --filter label=com.docker.compose.service=door; }
door_before=$(door_id)
probe "$work/nomigrate.json" -- de -q deploy 1.2.1
[ "$(door_id)" = "$door_before" ] || echo "note: the door container was recreated during the deploy without migrate"
echo "== de-build rollback 1.2.1 -> 1.2.0 (image present)"
door_before=$(door_id)
t0=$(date +%s.%N)
probe "$work/rollback.json" -- de -q rollback 1.2.0
t1=$(date +%s.%N)
[ "$(door_id)" = "$door_before" ] || echo "note: the door container was recreated during the rollback"

python3 - "$work/de.json" "$work/manual.json" "$rec" "$t0" "$t1" "$work/de.json.secs" "$work/manual.json.secs" "$work/nomigrate.json" "$work/rollback.json" <<'PY'
import json, sys
de, man, rec = (json.load(open(p)) for p in sys.argv[1:4])
nomig, rb = (json.load(open(p)) for p in sys.argv[8:10])
t0, t1 = float(sys.argv[4]), float(sys.argv[5])
backup = sum(s["seconds"] for s in rec["steps"] if s["step"] == "backup")
migrate = sum(s["seconds"] for s in rec["steps"] if s["step"] == "migrate")
print(f"unreachable: de-build {de['unreachable']:.2f}s, manual {man['unreachable']:.2f}s -> ratio {de['unreachable'] / max(man['unreachable'], 1e-9):.2f}x (goal <= 0.5x)")
print(f"maintenance: de-build {de['maintenance']:.2f}s vs backup {backup:.2f}s + migrate {migrate:.2f}s = {backup + migrate:.2f}s (goal: at most +0.3s = {backup + migrate + 0.3:.2f}s)")
print(f"whole command: de-build deploy {open(sys.argv[6]).read().strip()}s, manual {open(sys.argv[7]).read().strip()}s")
print(f"rollback with the image present: {t1 - t0:.2f}s (goal <= 5s)")
print(f"failed requests (of {de['samples']}/{man['samples']}/{nomig['samples']}/{rb['samples']} probes): deploy with migrate {de['failed']}, manual {man['failed']}, deploy without migrate {nomig['failed']} (goal 0), rollback {rb['failed']} (goal 0)")
print(f"unreachable without migrate: deploy {nomig['unreachable']:.2f}s, rollback {rb['unreachable']:.2f}s (goal 0); maintenance answers: {nomig['maintenance_answers']}, {rb['maintenance_answers']}; slowest answer: {nomig['slowest']:.2f}s, {rb['slowest']:.2f}s")
for name, r in (("deploy with migrate", de), ("deploy without migrate", nomig), ("rollback", rb)):
    if r["failures"]:
        print(f"failed requests in the {name}, the first: {', '.join(r['failures'])}")
print("de-build deploy steps: " + ", ".join(f"{s['step'].split(':')[0][:28]} {s['seconds']:.2f}s" for s in rec["steps"]))
PY
