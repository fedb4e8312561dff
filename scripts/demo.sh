#!/usr/bin/env bash
# Install tessvrt and run it offline against the sample bucket on a local S3 server.
# Reuses ~/.cache/tessvrt/sample (the bucket, built once) and ~/.cache/tessvrt/demo (this demo's files,
# replaced each run); $TESSVRT_CACHE_DIR and $TESSVRT_DEMO_DIR move them.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python scripts/demo.py "$@"
