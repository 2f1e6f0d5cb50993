#!/bin/sh
# Build the image of a swarm test node without pulling anything: a Debian
# rootfs with the engine (debootstrap from the machine's own apt mirror),
# imported as an image; docker-registry is included so the same image runs
# the cluster's registry. Usage: swarm-node.sh IMAGE_NAME
set -eu
name="$1"
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' "$f" | grep -v security | head -1)
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1=="deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
mirror="${mirror:-http://deb.debian.org/debian}"
root=$(mktemp -d /tmp/swarm-node-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
  --include=docker.io,docker-registry,iptables,procps,iproute2,ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -30 "$root.log"; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# Smaller image: no apt lists, docs or caches.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
tar -C "$root" -c . | docker import \
  --change 'CMD ["dockerd", "--host", "unix:///var/run/docker.sock"]' \
  --message "de-build swarm test node" - "$name"
