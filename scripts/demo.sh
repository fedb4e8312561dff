#!/usr/bin/env bash
# Install tessvrt and run it offline against a generated sample bucket on a local S3 server.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python scripts/demo.py "$@"
