#!/usr/bin/env bash
# hardmine against pyarrow's read and the numpy baseline on the dump shapes of issue #10.
#
#   benches/compare.sh [--shapes S1,S2,S3,S4] [--rounds 3] [--memory] [--keep] [--no-build]
#
# 1. Creates (or reuses) a venv with numpy and pyarrow from PyPI in
#    $HOME/.cache/hardmine-bench-venv (HARDMINE_BENCH_VENV overrides; installs only if missing).
# 2. Builds the release binary and the scan_floor example
#    (`cargo build --release --locked --bins --examples`, CARGO_TARGET_DIR defaulting to
#    $HOME/.cache/hardmine-target; skipped with --no-build).
# 3. Runs benches/compare.py: generates S1-S4 once into $HOME/.cache/hardmine-bench/ (cached,
#    with a marker holding the generate command), measures pyarrow read, scan_floor, analyze,
#    report, analyze with the baseline's strategies and python_baseline.py in alternating rounds
#    under /usr/bin/time, prints medians, max RSS, the ratios of issue #10's targets (met / not
#    met), the baseline's totals against hardmine's JSON (PASS/FAIL at 1e-9 relative) and a
#    Markdown table for docs/benchmarks.md.
#
# Time: generating S1-S4 takes 1-2 min once; then about 13 min for 3 rounds of all four shapes on a
# busy 2-core machine (plus the build). Disk: about 2.1 GB for S1-S4; --memory adds about 6.5 GB
# and 5-8 min.
# Details: the docstring of benches/compare.py. Exit status 1 when a command failed or a baseline
# total did not match hardmine's.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hardmine-target}"
VENV="${HARDMINE_BENCH_VENV:-$HOME/.cache/hardmine-bench-venv}"

build=1
args=()
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        -h|--help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            exit 0 ;;
        *) args+=("$a") ;;
    esac
done

die() { echo "compare.sh: $*" >&2; exit 1; }
command -v python3 >/dev/null 2>&1 || die "python3 not found"
[ -x /usr/bin/time ] && /usr/bin/time --version 2>&1 | grep -q GNU \
    || die "GNU time is needed at /usr/bin/time (Debian: apt-get install time)"

if [ ! -x "$VENV/bin/python" ]; then
    echo "compare.sh: creating the venv $VENV"
    python3 -m venv "$VENV" || die "cannot create a venv (Debian: apt-get install python3-venv)"
fi
if ! "$VENV/bin/python" -c 'import numpy, pyarrow' >/dev/null 2>&1; then
    echo "compare.sh: installing numpy and pyarrow into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check numpy pyarrow
fi

if [ "$build" = 1 ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust with rustup (https://rustup.rs)"
    echo "compare.sh: cargo build --release --locked --bins --examples (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    cargo build --release --locked --bins --examples
fi

exec "$VENV/bin/python" benches/compare.py ${args[@]+"${args[@]}"}
