#!/bin/sh
# frappe_docker resources/core/nginx/nginx-entrypoint.sh: defaults for the
# variables, the template filled in (envsubst there, sed here) into
# /etc/nginx/conf.d/frappe.conf, then nginx in the foreground.
set -e
: "${BACKEND:=0.0.0.0:8000}"
: "${SOCKETIO:=0.0.0.0:9000}"
# shellcheck disable=SC2016
: "${FRAPPE_SITE_NAME_HEADER:=\$host}"
: "${PROXY_READ_TIMEOUT:=120}"
mkdir -p /etc/nginx/conf.d
sed -e "s|\${BACKEND}|$BACKEND|g" \
    -e "s|\${SOCKETIO}|$SOCKETIO|g" \
    -e "s|\${FRAPPE_SITE_NAME_HEADER}|$FRAPPE_SITE_NAME_HEADER|g" \
    -e "s|\${PROXY_READ_TIMEOUT}|$PROXY_READ_TIMEOUT|g" \
    /templates/nginx/frappe.conf.template >/etc/nginx/conf.d/frappe.conf
# frappe_docker's frontend runs as `frappe` (uid 1000), so the file its
# entrypoint writes is frappe's; the demo runs as root and gives it the same
# owner, so a rewrite that did not keep the owner would show.
chown 1000:1000 /etc/nginx/conf.d/frappe.conf
exec nginx -g 'daemon off;'
