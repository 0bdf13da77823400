#!/usr/bin/env python3
"""Same-run A/B of two hardmine builds: the speed-up of one change, measured on a shared machine.

    benches/ab.sh REV [--shapes S1,S2,S3,S4] [--rounds 3] [--commands analyze,report] [--threads N]

(ab.sh builds the two binaries and runs this script; see its header.) For each shape of
benches/compare.py (the cached dumps in $HOME/.cache/hardmine-bench, generated when missing) and
each command, the two binaries run in alternating order (A B, then B A, ...), and the script
prints the medians of wall time and of CPU time (user + system of the process) and their ratios
A / B: > 1 means B (the work tree) is faster. Wall time shows what a user waits, CPU time is less
sensitive to the other processes on the machine; both are medians of alternating rounds, so a
load that comes and goes hits both binaries alike.

It also compares the JSON of `analyze` from both binaries: identical bytes, or the largest
relative difference over all numbers (a change of the summation order moves the last bits).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the shapes and their cache)


def run(argv):
    """Wall and CPU seconds of one run of argv (stdout to a file in the caller's temp dir)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        compare.die(f"{' '.join(argv)} failed (exit {r.returncode}):\n{r.stderr.decode(errors='replace')[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.stdout


def max_rel_diff(a, b, path=""):
    """Largest relative difference between the numbers of two JSON values of the same shape
    (None if their shapes or non-numeric values differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return None
        diffs = [max_rel_diff(a[k], b[k], f"{path}/{k}") for k in a]
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return None
        diffs = [max_rel_diff(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))]
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return compare.rel_diff(a, b)
    else:
        return 0.0 if a == b else None
    if any(d is None for d in diffs):
        return None
    return max(diffs, default=0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="binary A (the reference)")
    ap.add_argument("b", help="binary B (the change)")
    ap.add_argument("--shapes", default="S1,S2,S3,S4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--commands", default="analyze", help="comma-separated: analyze, report")
    ap.add_argument("--threads", type=int, default=None, help="--threads for both (default: all cores)")
    args = ap.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in shapes if s not in compare.SHAPES]
    if unknown:
        compare.die(f"unknown shape(s) {unknown}: choose from {', '.join(compare.SHAPES)}")
    cmds = [c for c in args.commands.split(",") if c]
    bad = [c for c in cmds if c not in ("analyze", "report")]
    if bad:
        compare.die(f"unknown command(s) {bad}: choose from analyze, report")
    if args.rounds < 1:
        compare.die("--rounds must be at least 1")
    cache = os.environ.get("HARDMINE_BENCH_CACHE", os.path.expanduser("~/.cache/hardmine-bench"))
    dirs = {s: compare.ensure_shape(s, compare.SHAPES[s], cache, args.b) for s in shapes}
    binaries = {"A": args.a, "B": args.b}
    extra = ["--threads", str(args.threads)] if args.threads else []
    with tempfile.TemporaryDirectory(prefix="hardmine-ab-") as work:
        times = {}
        outputs = {}
        for r in range(args.rounds):
            for s in shapes:
                for c in cmds:
                    for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                        argv = [binaries[name], c, dirs[s]] + extra
                        if c == "analyze":
                            argv += ["--format", "json"]
                        else:
                            argv += ["--out", os.path.join(work, f"{name}.html")]
                        wall, cpu, out = run(argv)
                        times.setdefault((s, c, name), []).append((wall, cpu))
                        if c == "analyze":
                            outputs[(s, name)] = out
                    w = {n: statistics.median(t[0] for t in times[(s, c, n)]) for n in "AB"}
                    compare.say(f"round {r + 1} {s} {c}: A {w['A']:.2f} s, B {w['B']:.2f} s (medians so far)")
    compare.say()
    compare.say(f"A = {args.a}\nB = {args.b}\nmedians of {args.rounds} alternating rounds; ratio A / B (> 1: B is faster)")
    compare.say("| shape | command | wall A | wall B | A / B | CPU A | CPU B | A / B | analyze JSON |")
    compare.say("|---|---|---|---|---|---|---|---|---|")
    for s in shapes:
        for c in cmds:
            med = {n: [statistics.median(t[i] for t in times[(s, c, n)]) for i in (0, 1)] for n in "AB"}
            same = ""
            if c == "analyze":
                a, b = outputs[(s, "A")], outputs[(s, "B")]
                if a == b:
                    same = "identical"
                else:
                    d = max_rel_diff(json.loads(a), json.loads(b))
                    same = "differs in shape or text" if d is None else f"max rel diff {d:.1e}"
            compare.say(
                f"| {s} | {c} | {med['A'][0]:.2f} s | {med['B'][0]:.2f} s | {med['A'][0] / med['B'][0]:.2f}x "
                f"| {med['A'][1]:.2f} s | {med['B'][1]:.2f} s | {med['A'][1] / med['B'][1]:.2f}x | {same} |"
            )


if __name__ == "__main__":
    main()
