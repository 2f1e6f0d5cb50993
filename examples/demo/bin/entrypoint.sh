#!/bin/sh
# frappe_docker resources/core/main-entrypoint.sh (the image's ENTRYPOINT):
# the image keeps its built assets under assets/, and every container links
# sites/assets on the shared sites volume to its own image's copy.
set -e
ASSETS_PATH="/home/frappe/frappe-bench/sites/assets"
BAKED_PATH="/home/frappe/frappe-bench/assets"
rm -rf "$ASSETS_PATH"
mkdir -p "$(dirname "$ASSETS_PATH")"
ln -s "$BAKED_PATH" "$ASSETS_PATH"
exec "$@"
