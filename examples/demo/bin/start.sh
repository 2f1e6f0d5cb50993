#!/bin/sh
# frappe_docker resources/core/start.sh (the image's CMD) boots gunicorn on
# 0.0.0.0:8000 from sites/; the demo serves with its stand-in bench.
cd /home/frappe/frappe-bench/sites
exec bench serve --port 8000
