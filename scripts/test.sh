#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it.
#  - Debian gdal-bin (GDAL 3.6 CLI tools) and python3-qgis (QGIS 3.22 for /usr/bin/python3)
#    for the compatibility tests
#  - .venv: python3 (3.11) + tessvrt + test extras (rasterio wheel = GDAL 3.10)
#  - .venv312: python3.12 + rasterio 1.5 wheel (GDAL 3.12) for the same reads
#  - .venv-oracle: python3.12 + upstream geotessera 0.11.0 (~1 min, ~1.1 GB), the test oracle that
#    tests/oracle_geotessera.py drives (TESSVRT_ORACLE_PY)
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
apt_install() {
  [ -n "${APT_UPDATED:-}" ] || { $SUDO apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
command -v gdalinfo >/dev/null 2>&1 || apt_install gdal-bin
/usr/bin/python3 -c 'import qgis.core' >/dev/null 2>&1 || apt_install --no-install-recommends python3-qgis qgis-providers
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
PY312=""
for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
  if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then PY312=$c; break; fi
done
if [ -n "$PY312" ]; then
  [ -x .venv312/bin/python ] || "$PY312" -m venv .venv312
  .venv312/bin/pip install -q --disable-pip-version-check 'rasterio>=1.5' numpy
  export TESSVRT_PY312="$PWD/.venv312/bin/python"
fi
if [ -n "$PY312" ]; then
  [ -x .venv-oracle/bin/python ] || "$PY312" -m venv .venv-oracle
  .venv-oracle/bin/pip install -q --disable-pip-version-check 'geotessera==0.11.0'
  export TESSVRT_ORACLE_PY="$PWD/.venv-oracle/bin/python"
fi
.venv/bin/ruff check tessvrt tests scripts
exec .venv/bin/python -m pytest -q "$@"
