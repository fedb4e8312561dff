#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it.
#  - Debian gdal-bin (GDAL 3.6 CLI tools) and python3-qgis (QGIS 3.22 for /usr/bin/python3)
#    for the compatibility tests
#  - .venv: python3 (3.11) + tessvrt + test extras (rasterio wheel = GDAL 3.10; pytest-xdist)
#  - .venv312: python3.12 + rasterio 1.5 wheel (GDAL 3.12) for the same reads
#  - .venv313: python3.12 + gdal-wheel 3.13.3 (osgeo bindings, GDAL 3.13) for the npy VRT reads
#  - .venv-oracle: python3.12 + upstream geotessera 0.11.0 (~1.1 GB), the test oracle that
#    tests/oracle_geotessera.py drives (TESSVRT_ORACLE_PY)
# The venvs are built side by side; a venv whose stamp says it already holds what is asked is not
# reinstalled (a second run goes straight to the tests). The tests run on 2 pytest-xdist workers at nice 19
# (PYTEST_WORKERS, default 2; 0 = one process), beside the timing-sensitive tests (marker serial) in one process;
# pytest arguments pass through (bash scripts/test.sh -k zarr).
# Needs: python3 (3.11 here), python3.12 (found on PATH, under pyenv's root or the system's; or set
# PYTHON312=/path/to/python3.12), apt access for gdal-bin and python3-qgis, and time: a fresh clone took 14 min 26 s
# here (2 cores, pip's cache warm; docs/performance.md, "Test suite").
# A missing tool stops the run with one line saying what to install; each phase's wall time is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
die() { echo "scripts/test.sh: error: $*" >&2; exit 1; }
phase() { echo "scripts/test.sh: $1 took $(( SECONDS - $2 )) s" >&2; }
command -v python3 >/dev/null 2>&1 || die "no python3 on PATH; install Python 3 (3.11 is what CI uses)"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
apt_install() {
  [ -n "${APT_UPDATED:-}" ] || { $SUDO apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
command -v gdalinfo >/dev/null 2>&1 || apt_install gdal-bin
/usr/bin/python3 -c 'import qgis.core' >/dev/null 2>&1 || apt_install --no-install-recommends python3-qgis qgis-providers
command -v gdalinfo >/dev/null 2>&1 || die "gdalinfo is still missing after installing gdal-bin; install it (apt install gdal-bin)"
/usr/bin/python3 -c 'import qgis.core' >/dev/null 2>&1 \
  || die "/usr/bin/python3 cannot import qgis.core after installing python3-qgis; install it (apt install python3-qgis qgis-providers)"
# python3.12 wherever it is kept: the pyenv shim on PATH fails under another HOME, so pyenv's root and
# the usual install folders are searched too
PY312=""
PYENV_ROOT_DIR=$(pyenv root 2>/dev/null || true)
for c in ${PYTHON312:-} python3.12 ${PYENV_ROOT_DIR:+"$PYENV_ROOT_DIR"/versions/3.12*/bin/python3.12} \
         "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 \
         /usr/local/bin/python3.12 /usr/bin/python3.12; do
  if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then PY312=$c; break; fi
done
[ -n "$PY312" ] || die "no python3.12 found (PATH, pyenv root, ~/.pyenv, /root/.pyenv, /usr/local/bin, /usr/bin): the GDAL 3.12 \
and upstream-oracle (geotessera needs Python >= 3.12) tests need it; install Python 3.12 (pyenv install 3.12, apt install \
python3.12) or set PYTHON312=/path/to/python3.12"
echo "scripts/test.sh: python3.12 is $PY312" >&2
phase "system tools" "$START"

# --- venvs, built side by side ---------------------------------------------------------------------
# venv DIR PYTHON PIP-ARGS...: make DIR with PYTHON and pip-install PIP-ARGS into it, in the background
# (log in DIR.log). Skipped when DIR's stamp holds the same PIP-ARGS and pyproject.toml (a finished
# install); a failed one leaves no stamp, so the next run installs again.
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
JOBS=()
venv() {
  local dir=$1 py=$2; shift 2
  local want; want="$* $(sha256sum pyproject.toml | cut -c1-16)"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.tessvrt-stamp" 2>/dev/null)" = "$want" ]; then
    echo "scripts/test.sh: $dir is up to date" >&2; return
  fi
  ( set -e; rm -f "$dir/.tessvrt-stamp"; [ -x "$dir/bin/python" ] || "$py" -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check --no-compile "$@"
    echo "$want" > "$dir/.tessvrt-stamp" ) > "$LOGS/${dir#.}.log" 2>&1 &
  JOBS+=("$!:$dir")
}
T=$SECONDS
venv .venv python3 -e '.[test]'
venv .venv312 "$PY312" 'rasterio>=1.5' numpy
venv .venv-oracle "$PY312" 'geotessera==0.11.0'
# Extra venvs go here, one `venv` line each (then export the variable their tests read below).
# GDAL 3.13: PyPI gdal-wheel's osgeo bindings (no rasterio, no Zarr/GTI driver) read the npy VRTs (tests/gdal_read_osgeo.py)
venv .venv313 "$PY312" 'gdal-wheel==3.13.3' numpy
for job in ${JOBS[@]+"${JOBS[@]}"}; do
  wait "${job%%:*}" || { tail -n 30 "$LOGS/${job#*:.}.log" >&2; die "pip install into ${job#*:} failed (its log's end is above)"; }
done
export TESSVRT_PY312="$PWD/.venv312/bin/python" TESSVRT_PY313="$PWD/.venv313/bin/python" TESSVRT_ORACLE_PY="$PWD/.venv-oracle/bin/python"
phase "venvs" "$T"

T=$SECONDS
.venv/bin/ruff check tessvrt tests scripts
WORKERS=${PYTEST_WORKERS:-2}
# Two lanes: the tests marked serial (deadlines and signal timings measured in seconds: tests/conftest.py SERIAL;
# they mostly wait on stalled servers and timers) in one process at normal priority, beside the rest on xdist
# workers at nice 19, so the workers' load takes CPU only when the timed lane leaves it (the kernel's weights:
# 1024 against 15). Exit 5 = nothing selected (e.g. -k). PYTEST_WORKERS=0: both lanes one after the other in one
# process each.
rc=0
pytest_rc() { local r=$1; [ "$r" = 5 ] || [ "$r" = 0 ] || rc=$r; }
if [ "$WORKERS" = 0 ]; then
  r=0; .venv/bin/python -m pytest -q --durations=15 -m serial "$@" || r=$?; pytest_rc "$r"
  r=0; .venv/bin/python -m pytest -q --durations=15 -m "not serial" "$@" || r=$?; pytest_rc "$r"
else
  ( r=0; .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 -m serial "$@" > "$LOGS/serial.out" 2>&1 || r=$?
    echo "$r" > "$LOGS/serial.rc" ) &
  SERIAL_PID=$!
  r=0; nice -n 19 .venv/bin/python -m pytest -q --durations=15 -n "$WORKERS" --dist loadfile -m "not serial" "$@" || r=$?
  pytest_rc "$r"
  phase "workers' tests" "$T"
  wait "$SERIAL_PID" || true
  echo "scripts/test.sh: the serial lane (tests marked serial, run beside the workers):" >&2
  cat "$LOGS/serial.out"
  pytest_rc "$(cat "$LOGS/serial.rc" 2>/dev/null || echo 1)"
fi
phase "ruff and pytest" "$T"
echo "scripts/test.sh: finished in $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s (set-up included), exit $rc" >&2
exit $rc
