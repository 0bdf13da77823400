#!/usr/bin/env bash
# Runs the Python tests (python/tests: hardmine.capture and the bindings) against the hardmine
# binary.
#
#   bash python/ci.sh [pytest args...]
#
# - a venv is kept at $HARDMINE_PY_VENV (default $HOME/.cache/hardmine-py-venv) and created on
#   the first run; the pinned python/requirements-test.txt is (re)installed only when the file's
#   hash differs from the one recorded in the venv (pip's cache: $HOME/.cache/pip);
# - the package itself (`pip install ./python`: maturin builds the Rust extension in release
#   mode into $CARGO_TARGET_DIR) is reinstalled only when its sources changed (a hash of
#   python/'s package, Rust and build files and of the root crate's Cargo.toml, Cargo.lock and
#   src/, recorded in the venv) or when it cannot be imported;
# - the hardmine binary is $HARDMINE_BIN when set, otherwise built with `cargo build --release`
#   into $CARGO_TARGET_DIR (default $HOME/.cache/hardmine-target, the directory .ci/run uses too);
# - pytest runs with HARDMINE_BIN pointing at that binary and imports the installed package
#   (not the sources in python/, which lack the compiled extension).
# Nothing is downloaded while the tests run (models are built with weights=None).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"

venv="${HARDMINE_PY_VENV:-$HOME/.cache/hardmine-py-venv}"
req="$here/requirements-test.txt"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "python/ci.sh: $python not found; install CPython >= 3.9 with venv support" >&2
    exit 1
fi

want="$("$python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$req")"
have=""
[ -f "$venv/.requirements-test.sha256" ] && have="$(cat "$venv/.requirements-test.sha256")"
if [ ! -x "$venv/bin/python" ]; then
    echo "python/ci.sh: creating venv $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    have=""
fi
if [ "$want" != "$have" ]; then
    echo "python/ci.sh: installing python/requirements-test.txt into $venv"
    start=$(date +%s)
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -r "$req"
    echo "$want" > "$venv/.requirements-test.sha256"
    echo "python/ci.sh: installed in $(( $(date +%s) - start )) s ($(du -sh "$venv" | cut -f1))"
else
    echo "python/ci.sh: reusing $venv (requirements unchanged)"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hardmine-target}"
if ! command -v cargo >/dev/null 2>&1; then
    echo "python/ci.sh: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi
if [ -n "${HARDMINE_BIN:-}" ]; then
    # A binary given by the caller (.ci/run passes the debug build its `cargo test` made).
    if [ ! -x "$HARDMINE_BIN" ]; then
        echo "python/ci.sh: HARDMINE_BIN=$HARDMINE_BIN is not an executable; unset it to build one" >&2
        exit 1
    fi
else
    (cd "$repo" && cargo build --release --locked --quiet)
    export HARDMINE_BIN="$CARGO_TARGET_DIR/release/hardmine"
fi

# The package: rebuilt and reinstalled when any of its sources changed.
pkg_want="$(cd "$repo" && find Cargo.toml Cargo.lock src python/Cargo.toml python/Cargo.lock \
        python/pyproject.toml python/README.md python/src python/hardmine -type f \
        ! -path '*/__pycache__/*' ! -name '*.so' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum \
    | sha256sum | cut -d' ' -f1)"
pkg_have=""
[ -f "$venv/.hardmine-package.sha256" ] && pkg_have="$(cat "$venv/.hardmine-package.sha256")"
if [ "$pkg_want" != "$pkg_have" ] || ! (cd / && "$venv/bin/python" -c 'import hardmine._native') 2>/dev/null; then
    echo "python/ci.sh: building and installing ./python into $venv (maturin, release)"
    start=$(date +%s)
    # maturin comes pinned from requirements-test.txt (no build isolation: nothing downloaded);
    # its build backend runs the `maturin` executable, hence the venv's bin/ on PATH.
    (cd "$repo" && PATH="$venv/bin:$PATH" "$venv/bin/python" -m pip install --quiet --no-deps \
        --no-build-isolation --force-reinstall ./python)
    echo "$pkg_want" > "$venv/.hardmine-package.sha256"
    echo "python/ci.sh: package installed in $(( $(date +%s) - start )) s"
else
    echo "python/ci.sh: reusing the installed package (sources unchanged)"
fi

# The tests keep to one thread each; so does anything they start.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# From python/tests and with the pytest script (not `python -m pytest`): neither this process
# nor the `python -c` children of the tests then have python/ (the sources, without the
# compiled extension) on sys.path ahead of the installed package.
cd "$here/tests"
exec "$venv/bin/pytest" -p no:cacheprovider . "$@"
