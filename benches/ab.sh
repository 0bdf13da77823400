#!/usr/bin/env bash
# Same-run A/B: the work tree's hardmine (B) against the build of a git revision (A).
#
#   benches/ab.sh REV [--shapes S1,S2,S3,S4] [--rounds 3] [--commands analyze,report] [--threads N]
#
# On a shared machine absolute times move by 20-50% from one minute to the next; the ratio of
# two binaries run in alternating order in the same minutes does not. This script:
# 1. Checks REV out into a worktree under $HOME/.cache/hardmine-ab/src-<commit> and builds its
#    `hardmine` binary with CARGO_TARGET_DIR=$HOME/.cache/hardmine-target-ab (kept across runs:
#    the first build is a clean one, ~10 min on 2 cores; later ones rebuild hardmine only).
# 2. Builds the work tree's binary (`cargo build --release --locked --bin hardmine`,
#    CARGO_TARGET_DIR defaulting to $HOME/.cache/hardmine-target).
# 3. Runs benches/ab.py with the two binaries: the cached dumps of benches/compare.py (generated
#    when missing), alternating rounds, medians of wall and CPU time, ratios, and whether the
#    `analyze` JSON of the two is identical (or its largest relative difference).
# Needs python3 (standard library only) and cargo. Example: `benches/ab.sh HEAD~3 --shapes S2`.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "ab.sh: $*" >&2; exit 1; }
case "${1:-}" in
    ""|-h|--help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        exit 0 ;;
esac
command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust with rustup (https://rustup.rs)"
command -v python3 >/dev/null 2>&1 || die "python3 not found"

rev="$1"
shift
commit="$(git rev-parse --verify --quiet "$rev^{commit}")" || die "'$rev' is not a commit of this repository"
short="$(git rev-parse --short "$commit")"
root="$HOME/.cache/hardmine-ab"
src="$root/src-$short"
mkdir -p "$root"
if [ ! -d "$src" ]; then
    git worktree prune
    git worktree add --detach --force "$src" "$commit" >/dev/null
fi
echo "ab.sh: A = $rev ($short), built in $src"
(cd "$src" && CARGO_TARGET_DIR="$HOME/.cache/hardmine-target-ab" cargo build --release --locked --quiet --bin hardmine)
a="$root/hardmine-$short"
cp "$HOME/.cache/hardmine-target-ab/release/hardmine" "$a"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hardmine-target}"
echo "ab.sh: B = the work tree ($(git rev-parse --short HEAD)$(git diff --quiet || echo ', with changes'))"
cargo build --release --locked --quiet --bin hardmine
b="$root/hardmine-worktree"
cp "$CARGO_TARGET_DIR/release/hardmine" "$b"

exec python3 benches/ab.py "$a" "$b" "$@"
