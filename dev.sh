#!/usr/bin/env bash
# dicomweb-nb developer entry point; the README quickstart's two commands.
#
#   ./dev.sh start [jupyter args]   JupyterLab with the DICOMweb extension, a workspace store
#                                   preloaded with sample studies, and the example notebooks
#   ./dev.sh test  [pytest args]    the whole test suite (installs Orthanc and Chromium first)
#   ./dev.sh fix                    ruff's automatic fixes, and lines over the length limit wrapped by
#                                   ruff's formatter (those lines only); what remains, ruff check shows
#
# Each command makes its own virtual environment (.venv, or $DICOMWEB_NB_VENV) and installs what it needs.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV=${DICOMWEB_NB_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}

ensure_venv() {
    local extras=$1
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating virtual environment $VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
    fi
    # Reinstall only when the project definition changed since the last install.
    local stamp="$VENV/.dicomweb-nb-$extras"
    local digest
    digest=$(cat pyproject.toml | "$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
        echo "==> installing dicomweb-nb[$extras] into $VENV"
        "$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
        echo "$digest" > "$stamp"
    fi
}

have_system_deps() {
    command -v Orthanc >/dev/null 2>&1 && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] && command -v chromium >/dev/null 2>&1 \
        && command -v ojph_compress >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1
}

ensure_system_deps() {
    # Orthanc (+ its DICOMweb plugin) is the real remote peer of the tests; Chromium drives the browser tests;
    # OpenJPH's ojph_compress encodes the HTJ2K frames of the content negotiation tests.
    # PostgreSQL is the team store's index (the tests start their own server, as the postgres user).
    have_system_deps && return 0
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "error: the tests need the Debian packages orthanc, orthanc-dicomweb, chromium and postgresql; install them as root" >&2
            exit 1
        fi
    fi
    echo "==> installing Debian packages orthanc orthanc-dicomweb chromium openjph-tools postgresql"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        orthanc orthanc-dicomweb chromium fonts-dejavu-core openjph-tools postgresql >/dev/null
    # The package starts a system Orthanc where an init system runs; the tests start their own.
    $sudo service orthanc stop >/dev/null 2>&1 || true
    $sudo service postgresql stop >/dev/null 2>&1 || true
}

case "${1:-}" in
    start)
        shift
        ensure_venv lab
        export PATH="$VENV/bin:$PATH"
        echo "==> preloading the workspace store (.dicomweb/) with sample studies"
        dicomweb-nb samples --store "$ROOT/.dicomweb"
        root_flag=()
        [ "$(id -u)" = 0 ] && root_flag=(--allow-root)
        exec jupyter lab --ServerApp.root_dir="$ROOT" --ServerApp.ip=127.0.0.1 \
            --ServerApp.default_url=/lab/tree/notebooks/01-quickstart.ipynb "${root_flag[@]}" "$@"
        ;;
    test)
        shift
        ensure_system_deps
        ensure_venv test
        export PATH="$VENV/bin:$PATH"
        export DICOMWEB_NB_REQUIRE_PEERS=1   # missing Orthanc/Chromium fails the run instead of skipping
        # A private temporary root: pytest prunes old runs in the shared one, even a live run's.
        PYTEST_DEBUG_TEMPROOT=$(mktemp -d -t dicomweb-nb-tests.XXXXXX)
        export PYTEST_DEBUG_TEMPROOT
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    fix)
        ensure_venv test
        paths=(dicomweb_nb jupyter_server_ext tests benchmarks)
        "$VENV/bin/ruff" check --fix --quiet "${paths[@]}" || true
        # Only the lines ruff finds too long are reformatted (bottom up, so line numbers stay right).
        "$VENV/bin/ruff" check --select E501 --output-format concise "${paths[@]}" 2>/dev/null \
            | grep -E '^[^:]+:[0-9]+:' | cut -d: -f1,2 | sort -t: -k1,1 -k2,2nr \
            | while IFS=: read -r file line; do
                "$VENV/bin/ruff" format --quiet --range="$line:1-$((line + 1)):1" "$file"
            done
        exec "$VENV/bin/ruff" check "${paths[@]}"
        ;;
    *)
        echo "usage: ./dev.sh start [jupyter args] | ./dev.sh test [pytest args] | ./dev.sh fix" >&2
        exit 2
        ;;
esac
