"""hardmine against pyarrow and numpy on the dump shapes of issue #10: times, ratios, memory.

Run it through its wrapper, from the repository root:

    benches/compare.sh [--shapes S1,S2,S3,S4] [--rounds 3] [--memory] [--keep]

The wrapper creates (or reuses) a venv with numpy and pyarrow in $HOME/.cache/hardmine-bench-venv,
builds the release binary and the scan_floor example (CARGO_TARGET_DIR defaults to
$HOME/.cache/hardmine-target), then runs this script with the venv's python.

What it does:

1. Generates each dump shape once with `hardmine generate` into $HOME/.cache/hardmine-bench/<shape>/
   (HARDMINE_BENCH_CACHE overrides the directory). A shape is reused when its marker file
   `.complete` holds the same generate command; otherwise it is regenerated.
     S1  50 images x 100k anchors x 20 classes, seed 7 (one 431 MB file, 100M decisions)
     S2  256 x 100k x 4 (row-heavy, 6 files, 538 MB, 102M decisions)
     S3  32 x 40k x 80, 8 images per file (COCO-like, 4 files, 400 MB, 102M decisions)
     S4  binary layout (one row per decision), 52 x 100k x 20, seed 7 (2 files, 635 MB,
         103M rows)
   With --memory, also:
     M1  S1's shape at 650 images (>= 5 GB on disk, 1.3B decisions)
     M2  one file, one row group of 10M anchors x 20 classes (`--rows-per-group 10000000`)
2. Reads each dump once (untimed) so that every command finds it in the page cache, then runs
   the commands below in alternating rounds (round 1: each command once, round 2: each again, ...)
   under GNU `/usr/bin/time -f '%e %M'` (wall time taken with a monotonic clock around it, max
   RSS from time's %M; for the two python commands, the time measured inside the interpreter
   after its start-up and imports, which is the stricter comparison for hardmine):
     read        pyarrow `pq.read_table(file, columns=...)`, file by file, of the columns
                 scan_floor reads (image_id, label or target, the scores, anchor_id)
     scan_floor  `examples/scan_floor DUMP` (the I/O floor of hardmine's reader)
     analyze     `hardmine analyze DUMP --format json --output FILE` (every default strategy)
     report      `hardmine report DUMP --out FILE.html` (every strategy, the default 5 x 4 gamma
                 x alpha sweep, breakdowns, charts)
     analyze6    `hardmine analyze DUMP --strategies ce,alpha_ce,focal,ohem,ssd,sampled --format
                 json` (the baseline's strategies; dense shapes only)
     baseline    `python benches/python_baseline.py DUMP --json FILE` (dense shapes only: the
                 baseline reads dense sigmoid dumps, not the binary layout)
   M1 and M2 run `hardmine analyze DUMP --strategies ce,focal` only.
3. Prints per shape the medians, max RSS, the ratios of issue #10's targets (from the medians of
   this run, with the range of the per-round ratios) and whether each target is met; checks that
   every number the baseline computes equals hardmine's analyze6 JSON to 1e-9 relative (counts
   exactly), PASS/FAIL per total; checks that hardmine's analyze JSON is byte-identical across
   rounds; and ends with a Markdown table for docs/benchmarks.md (also written to
   $HOME/.cache/hardmine-bench/last-table.md).

How long (2 cores shared with other builds, 2026-11-29): generating S1-S4 takes about 1-2 minutes
once (S4 40 s); a round takes about 30-60 s for each dense shape and 2 minutes for S4, so the
default (S1-S4, 3 rounds) took 13 minutes, plus the cargo build. --memory adds about 2 minutes
of generation and about 100 s per round (M1 is 1.3B decisions).

Disk: S1-S4 take about 2.1 GB; --memory adds about 6.5 GB (M1 5.6 GB, M2 0.9 GB). Free space is
checked before generating.

Exit status: 0 when every command ran and every baseline total matched; 1 otherwise (targets not
met do not change the exit status: they are what issue #10 is about).
"""

import argparse
import glob
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30
REL_TOL = 1e-9
BASELINE_STRATEGIES = "ce,alpha_ce,focal,ohem,ssd,sampled"

# name: (generate arguments, description, approximate size on disk in bytes, dense?)
SHAPES = {
    "S1": (
        "--images 50 --anchors-per-image 100000 --classes 20 --seed 7",
        "50 x 100k x 20",
        0.45e9,
        True,
    ),
    "S2": ("--images 256 --anchors-per-image 100000 --classes 4", "256 x 100k x 4", 0.56e9, True),
    "S3": (
        "--images 32 --anchors-per-image 40000 --classes 80 --images-per-file 8",
        "32 x 40k x 80",
        0.42e9,
        True,
    ),
    "S4": (
        "--layout binary --images 52 --anchors-per-image 100000 --classes 20 --seed 7",
        "binary, 52 x 100k x 20",
        0.7e9,
        False,
    ),
}
MEMORY_SHAPES = {
    "M1": (
        "--images 650 --anchors-per-image 100000 --classes 20 --seed 7",
        "S1's shape, 650 images (>= 5 GB)",
        5.7e9,
        True,
    ),
    "M2": (
        "--images 100 --anchors-per-image 100000 --classes 20 --seed 7 --images-per-file 100 "
        "--rows-per-group 10000000",
        "one row group of 10M anchors x 20",
        0.9e9,
        True,
    ),
}
MIN_ROWS_S4 = 100_000_000

READ_SNIPPET = """
import glob, os, sys, time
import pyarrow.parquet as pq
files = sorted(glob.glob(os.path.join(sys.argv[1], "**", "*.parquet"), recursive=True))
cols = sys.argv[2].split(",")
start = time.perf_counter()
rows = 0
for f in files:
    t = pq.read_table(f, columns=cols)
    rows += t.num_rows
    del t
print(rows, "rows")
print("elapsed", time.perf_counter() - start)
"""


def say(msg=""):
    print(msg, flush=True)


def die(msg):
    print(f"compare: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def human_bytes(n):
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n} B"


def dir_bytes(d):
    return sum(os.path.getsize(f) for f in glob.glob(os.path.join(d, "**", "*.parquet"), recursive=True))


def parquet_rows(d):
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(glob.glob(os.path.join(d, "*.parquet"))))


def ensure_shape(name, spec, cache, hardmine):
    """Generates the shape unless a complete copy with the same command is cached."""
    gen_args, desc, approx, _ = spec
    out = os.path.join(cache, name)
    cmd = [hardmine, "generate", "--out", out] + gen_args.split()
    marker = os.path.join(out, ".complete")
    want = " ".join(["hardmine", "generate"] + gen_args.split())
    if os.path.exists(marker) and open(marker).read().strip() == want:
        say(f"{name}: cached in {out} ({human_bytes(dir_bytes(out))}): {want}")
        return out
    if os.path.exists(out):
        shutil.rmtree(out)  # incomplete or generated with other arguments
    os.makedirs(cache, exist_ok=True)
    free = shutil.disk_usage(cache).free
    need = approx * 1.1 + 1e9
    if free < need:
        die(
            f"{name} needs about {human_bytes(approx)} in {cache} (plus 1 GB of margin), "
            f"only {human_bytes(free)} is free; free some space or set HARDMINE_BENCH_CACHE"
        )
    say(f"{name}: generating {desc} into {out} (about {human_bytes(approx)}; {human_bytes(free)} free): {want}")
    t0 = time.monotonic()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        die(f"generating {name} failed (exit {r.returncode}):\n{r.stdout[-3000:]}")
    size = dir_bytes(out)
    rows = parquet_rows(out)
    say(f"{name}: generated in {time.monotonic() - t0:.0f} s: {rows:,} rows, {human_bytes(size)}")
    if name == "S4" and rows < MIN_ROWS_S4:
        die(f"S4 has {rows:,} rows, fewer than {MIN_ROWS_S4:,}: raise --images in SHAPES['S4']")
    if name == "M2":
        import pyarrow.parquet as pq

        groups = [pq.ParquetFile(f).metadata.num_row_groups for f in glob.glob(os.path.join(out, "*.parquet"))]
        if groups != [1]:
            die(f"M2 should be one file with one row group, it has row groups {groups}")
    if name == "M1" and size < 5e9:
        die(f"M1 is {human_bytes(size)}, under 5 GB: raise --images in MEMORY_SHAPES['M1']")
    with open(marker, "w") as fh:
        fh.write(want + "\n")
    return out


def read_columns(d):
    """The physical columns scan_floor (and hardmine's reader) decode: image_id, the label or
    target, the scores and anchor_id when present."""
    import pyarrow.parquet as pq

    f = sorted(glob.glob(os.path.join(d, "*.parquet")))[0]
    names = pq.read_schema(f).names
    cols = ["image_id"]
    cols.append("label" if "label" in names else "target")
    cols.append(next(c for c in ("logits", "probs", "logit", "prob") if c in names))
    if "anchor_id" in names:
        cols.append("anchor_id")
    return cols


class Runner:
    def __init__(self, work):
        self.work = work
        self.n = 0

    def run(self, argv):
        """Runs argv under /usr/bin/time; returns (wall seconds, max RSS bytes, ok, output)."""
        self.n += 1
        tfile = os.path.join(self.work, f"time-{self.n}.txt")
        log = os.path.join(self.work, f"log-{self.n}.txt")
        with open(log, "w") as fh:
            t0 = time.perf_counter()
            r = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", tfile] + argv, stdout=fh, stderr=subprocess.STDOUT)
            wall = time.perf_counter() - t0
        text = open(log, errors="replace").read()
        rss = None
        try:
            fields = open(tfile).read().strip().splitlines()[-1].split()
            rss = int(fields[-1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return wall, rss, r.returncode == 0, text


def commands(name, d, dense, work, bins, py, memory):
    hardmine, floor = bins
    if memory:
        return [
            ("analyze_ce_focal", [hardmine, "analyze", d, "--strategies", "ce,focal", "--format", "json",
                                  "--output", os.path.join(work, f"{name}-cefocal.json"), "--quiet"]),
        ], None
    cols = read_columns(d)
    cmds = [
        ("read", [py, "-c", READ_SNIPPET, d, ",".join(cols)]),
        ("scan_floor", [floor, d]),
        ("analyze", [hardmine, "analyze", d, "--format", "json", "--output", os.path.join(work, f"{name}-analyze.json"), "--quiet"]),
        ("report", [hardmine, "report", d, "--out", os.path.join(work, f"{name}-report.html"), "--quiet"]),
    ]
    if dense:
        cmds += [
            ("analyze6", [hardmine, "analyze", d, "--strategies", BASELINE_STRATEGIES, "--format", "json",
                          "--output", os.path.join(work, f"{name}-analyze6.json"), "--quiet"]),
            ("baseline", [py, os.path.join(REPO, "benches", "python_baseline.py"), d,
                          "--json", os.path.join(work, f"{name}-baseline.json")]),
        ]
    return cmds, cols


def python_time(cname, text, work, name):
    """The python commands' own time, after the interpreter started and imported numpy/pyarrow
    (stricter for hardmine than the process's wall time)."""
    try:
        if cname == "read":
            return float(text.strip().splitlines()[-1].split()[1])
        if cname == "baseline":
            return float(json.load(open(os.path.join(work, f"{name}-baseline.json")))["elapsed_seconds"])
    except (OSError, ValueError, IndexError, KeyError) as e:
        die(f"cannot read the time of {cname}: {e}\n{text[-2000:]}")
    return None


def warm(d):
    for f in glob.glob(os.path.join(d, "**", "*.parquet"), recursive=True):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rel_diff(a, b):
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def compare_totals(base_path, hm_path):
    """Compares every number of the baseline's JSON with hardmine's; returns (lines, all_ok)."""
    base = json.load(open(base_path))
    hm = json.load(open(hm_path))
    lines, ok_all = [], True

    def check(label, pairs, show=None):
        """pairs: [(baseline value, hardmine value)]; counts (ints) must be equal."""
        nonlocal ok_all
        worst, ok = 0.0, True
        for a, b in pairs:
            if b is None:
                ok = False
                continue
            if isinstance(a, int) and isinstance(b, int):
                good = a == b
                d = 0.0 if good else math.inf
            else:
                d = rel_diff(float(a), float(b))
                good = d <= REL_TOL
            ok &= good
            worst = max(worst, d)
        ok_all &= ok
        vals = ""
        if show is not None:
            vals = f"  baseline {show[0]:.12g}  hardmine {show[1]:.12g}"
        lines.append(f"  {'PASS' if ok else 'FAIL'}  {label:<40s} max rel diff {worst:.1e}{vals}")

    ds_b, ds_h = base["dataset"], hm["dataset"]
    check(
        "dataset: " + ", ".join(ds_b),
        [(ds_b[k], ds_h.get(k)) for k in ds_b],
    )
    hm_strats = {s["name"]: s for s in hm["strategies"]}
    for s in base["strategies"]:
        h = hm_strats.get(s["name"])
        if h is None:
            lines.append(f"  FAIL  {s['name']}: not in hardmine's JSON")
            ok_all = False
            continue
        n = s["name"]
        check(f"{n} loss.total", [(s["loss"]["total"], h["loss"]["total"])], (s["loss"]["total"], h["loss"]["total"]))
        check(
            f"{n} loss.normalized",
            [(s["loss"]["normalized"], h["loss"]["normalized"])],
            (s["loss"]["normalized"], h["loss"]["normalized"]),
        )
        check(f"{n} selected", [(s["selected"], h["selected"])], (s["selected"], h["selected"]))
        pairs = []
        for b, v in s["buckets"].items():
            for k in ("count", "selected", "loss"):
                pairs.append((v[k], h["buckets"][b][k]))
        check(f"{n} buckets: count, selected, loss (x4)", pairs)
        pairs = [(v[k], h["buckets"][b][k]) for b, v in s["buckets"].items() for k in ("loss_share", "grad_share")]
        check(f"{n} buckets: loss_share, grad_share (x4)", pairs)
        for k, v in s["extra"].items():
            hv = h.get("extra", {}).get(k)
            if isinstance(v, dict):
                check(f"{n} extra.{k} (x{len(v)})", [(x, (hv or {}).get(b)) for b, x in v.items()])
            else:
                check(f"{n} extra.{k}", [(v, hv)], (v, hv) if hv is not None else None)
    ov_b, ov_h = base["overlaps"], hm.get("overlaps") or {}
    jh = {(j["a"], j["b"]): j["jaccard"] for j in ov_h.get("jaccard", [])}
    check(
        "overlaps: jaccard (x3), focal_share_in_ohem",
        [(j["jaccard"], jh.get((j["a"], j["b"]))) for j in ov_b["jaccard"]]
        + [(ov_b["focal_share_in_ohem"], ov_h.get("focal_share_in_ohem"))],
    )
    return lines, ok_all


def fmt_s(x):
    return "-" if x is None else (f"{x:.2f} s" if x >= 1 else f"{x:.3f} s")


def fmt_mb(x):
    return "-" if x is None else f"{x / 1e6:.0f} MB"


def main():
    ap = argparse.ArgumentParser(
        description="hardmine vs pyarrow and numpy on issue #10's dump shapes (run via benches/compare.sh)",
        epilog="Details, time and disk needed: the docstring at the top of benches/compare.py.",
    )
    ap.add_argument("--shapes", default="S1,S2,S3,S4",
                    help="comma-separated, from S1,S2,S3,S4 (default: all); none: only the --memory dumps")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per shape (default 3)")
    ap.add_argument("--memory", action="store_true",
                    help="also generate and measure M1 (S1's shape, >= 5 GB) and M2 (one 10M-anchor row group)")
    ap.add_argument("--keep", action="store_true", help="keep the outputs (JSON, HTML, logs) of the last round")
    args = ap.parse_args()
    if args.rounds < 1:
        die("--rounds must be at least 1")
    shapes = [s.strip().upper() for s in args.shapes.split(",") if s.strip() and s.strip().lower() != "none"]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        die(f"unknown shape(s) {unknown}: choose from {', '.join(SHAPES)} (or none, with --memory)")
    if not shapes and not args.memory:
        die("nothing to do: --shapes none needs --memory")

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.expanduser("~"), ".cache", "hardmine-target"))
    hardmine = os.path.join(target, "release", "hardmine")
    floor = os.path.join(target, "release", "examples", "scan_floor")
    for b in (hardmine, floor):
        if not os.access(b, os.X_OK):
            die(f"{b} is missing: build with `cargo build --release --locked --bins --examples` (compare.sh does)")
    if not os.access("/usr/bin/time", os.X_OK):
        die("/usr/bin/time is missing (Debian: apt-get install time)")
    try:
        import numpy  # noqa: F401
        import pyarrow
    except ImportError as e:
        die(f"{e}: run through benches/compare.sh, which sets up the venv")
    cache = os.environ.get("HARDMINE_BENCH_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "hardmine-bench"))
    os.makedirs(cache, exist_ok=True)

    say(f"hardmine: {hardmine}")
    say(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, pyarrow {pyarrow.__version__}; "
        f"{os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.2f}")
    say(f"rounds: {args.rounds}; shapes: {', '.join(shapes + (['M1', 'M2'] if args.memory else []))}")
    say()

    todo = [(s, SHAPES[s], False) for s in shapes]
    if args.memory:
        todo += [(s, MEMORY_SHAPES[s], True) for s in MEMORY_SHAPES]
    # Check the disk for everything still to generate, then generate it all before measuring.
    missing = [(n, spec) for n, spec, _ in todo if not os.path.exists(os.path.join(cache, n, ".complete"))]
    if missing:
        need = sum(spec[2] for _, spec in missing)
        free = shutil.disk_usage(cache).free
        say(f"to generate: {', '.join(n for n, _ in missing)}, about {human_bytes(need)} in {cache} "
            f"({human_bytes(free)} free)")
        if free < need * 1.1 + 1e9:
            die(f"not enough free disk in {cache}: need about {human_bytes(need * 1.1 + 1e9)} with margin, "
                f"{human_bytes(free)} free; free some space or set HARDMINE_BENCH_CACHE")
    dirs = {name: ensure_shape(name, spec, cache, hardmine) for name, spec, _ in todo}
    say()

    work = tempfile.mkdtemp(prefix="run-", dir=cache)
    runner = Runner(work)
    # The build directory is shared: another build may replace the binaries during the run. Every
    # round uses the same build: a hard link (or copy) of the binaries taken now.
    snap = []
    orig = os.stat(hardmine)
    for b in (hardmine, floor):
        dst = os.path.join(work, os.path.basename(b))
        try:
            os.link(b, dst)
        except OSError:
            shutil.copy2(b, dst)
        snap.append(dst)
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(hardmine)))
    say(f"using a snapshot of the binaries built {built} (hardmine {sha(hardmine)[:12]})")
    say()
    results = {}  # shape -> {command: [(wall, rss)]}
    failures = []
    keep_work = args.keep
    totals_ok = True
    totals_report = {}
    identical = {}
    for name, spec, memory in todo:
        d = dirs[name]
        dense = spec[3]
        cmds, cols = commands(name, d, dense, work, snap, sys.executable, memory)
        say(f"== {name} ({spec[1]}): {d}")
        if cols:
            say(f"   pyarrow reads columns {cols} (those scan_floor reads)")
        if dense and not memory:
            say(f"   analyze6 = hardmine analyze --strategies {BASELINE_STRATEGIES} (what the baseline computes)")
        if not dense:
            say("   baseline: skipped (python_baseline.py reads dense sigmoid dumps only, not the binary layout)")
        warm(d)
        res = {c: [] for c, _ in cmds}
        digests = []
        out_json = os.path.join(work, f"{name}-analyze.json")
        for r in range(1, args.rounds + 1):
            line = []
            for f in glob.glob(os.path.join(work, f"{name}-*.json")):
                os.remove(f)
            for cname, argv in cmds:
                wall, rss, ok, text = runner.run(argv)
                if not ok:
                    failures.append(f"{name} {cname}")
                    say(f"   round {r}: {cname} FAILED:\n{text[-2000:]}")
                    continue
                inner = python_time(cname, text, work, name)
                if inner is not None:
                    res[cname].append((inner, rss))
                    line.append(f"{cname} {inner:.2f}s (process {wall:.2f}s)/{fmt_mb(rss)}")
                else:
                    res[cname].append((wall, rss))
                    line.append(f"{cname} {wall:.2f}s/{fmt_mb(rss)}")
            say(f"   round {r}: " + ", ".join(line))
            if not memory and os.path.exists(out_json):
                digests.append(sha(out_json))
                shutil.copy2(out_json, os.path.join(work, f"{name}-analyze-round{r}.json.kept"))
            if r == 1 and dense and not memory and res["analyze6"] and res["baseline"]:
                lines, ok = compare_totals(os.path.join(work, f"{name}-baseline.json"),
                                           os.path.join(work, f"{name}-analyze6.json"))
                totals_ok &= ok
                totals_report[name] = (lines, ok)
        if len(digests) > 1:
            identical[name] = len(set(digests)) == 1
            if not identical[name]:
                keep_work = True
        results[name] = res
        print_shape(name, spec, res, memory, totals_report.get(name), identical.get(name))

    table = markdown(todo, results, args.rounds)
    say("== Markdown for docs/benchmarks.md")
    say()
    say(table)
    with open(os.path.join(cache, "last-table.md"), "w") as fh:
        fh.write(table + "\n")
    say(f"load average at the end {os.getloadavg()[0]:.2f}; table also in {os.path.join(cache, 'last-table.md')}")
    now = os.stat(hardmine) if os.path.exists(hardmine) else None
    if now is None or (now.st_ino, now.st_mtime_ns) != (orig.st_ino, orig.st_mtime_ns):
        say(f"note: {hardmine} was rebuilt during the run; every round used the snapshot taken at the start")
    if keep_work or failures:
        say(f"outputs kept in {work} (the analyze JSON of every round: *-analyze-round*.json.kept)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        say(f"FAILED commands: {', '.join(failures)}")
    if not totals_ok:
        say("baseline totals: FAIL (see above)")
    sys.exit(0 if not failures and totals_ok else 1)


def med(runs, i=0):
    vals = [r[i] for r in runs if r[i] is not None]
    return statistics.median(vals) if vals else None


def ratio_stats(res, num, den):
    """Ratio of the medians, and the range of the per-round ratios."""
    a, b = res.get(num) or [], res.get(den) or []
    if not a or not b:
        return None
    m = med(a) / med(b)
    per = [x[0] / y[0] for x, y in zip(a, b)]
    return m, min(per), max(per)


TARGETS = [
    # (label, numerator, denominator, bound, higher is better)
    ("scan_floor / pyarrow read", "scan_floor", "read", 1.0, False),
    ("analyze / pyarrow read", "analyze", "read", 2.0, False),
    ("report / pyarrow read", "report", "read", 3.0, False),
    ("baseline / analyze6 (hardmine's speed-up)", "baseline", "analyze6", 5.0, True),
]
RSS_TARGET_COMMANDS = ("scan_floor", "analyze", "report", "analyze6", "analyze_ce_focal")


def target_rows(res):
    rows = []
    for label, num, den, bound, higher in TARGETS:
        st = ratio_stats(res, num, den)
        if st is None:
            continue
        m, lo, hi = st
        met = m >= bound if higher else m <= bound
        rows.append((label, m, lo, hi, f"{'>=' if higher else '<='} {bound:g}", met))
    return rows


def print_shape(name, spec, res, memory, totals, identical):
    say(f"-- {name} ({spec[1]}): medians of {max(len(v) for v in res.values()) if res else 0} rounds")
    for c, runs in res.items():
        if not runs:
            say(f"   {c:<17s} failed")
            continue
        rss = max((r[1] for r in runs if r[1] is not None), default=None)
        mark = ""
        if c in RSS_TARGET_COMMANDS and rss is not None:
            mark = "  (max RSS <= 1 GiB: " + ("met" if rss <= GIB else "NOT met") + ")"
        say(f"   {c:<17s} {fmt_s(med(runs)):>9s}  max RSS {fmt_mb(rss):>8s}{mark}")
    for label, m, lo, hi, bound, met in target_rows(res):
        say(f"   {label:<42s} {m:6.2f}x  (rounds {lo:.2f}-{hi:.2f})  target {bound}: {'met' if met else 'NOT met'}")
    if identical is not None:
        say(f"   analyze JSON byte-identical across rounds: {'yes' if identical else 'NO'}")
    if totals is not None:
        lines, ok = totals
        say(f"   baseline totals vs hardmine analyze6 JSON (1e-9 relative, counts exact): {'PASS' if ok else 'FAIL'}")
        for line in lines:
            say("  " + line)
    say()


def markdown(todo, results, rounds):
    names = [n for n, _, _ in todo]
    head = "| | " + " | ".join(f"{n}: {spec[1]}" for n, spec, _ in todo) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    labels = [
        ("read", "pyarrow `read_table` (scan_floor's columns)"),
        ("scan_floor", "`scan_floor`"),
        ("analyze", "`analyze` (default strategies)"),
        ("report", "`report` (every strategy, 5 x 4 sweep)"),
        ("analyze6", f"`analyze --strategies {BASELINE_STRATEGIES}`"),
        ("baseline", "`python_baseline.py`"),
        ("analyze_ce_focal", "`analyze --strategies ce,focal`"),
    ]
    for key, label in labels:
        if not any(results[n].get(key) for n in names):
            continue
        cells = []
        for n in names:
            runs = results[n].get(key)
            if not runs:
                cells.append("-")
                continue
            rss = max((r[1] for r in runs if r[1] is not None), default=None)
            cells.append(f"{fmt_s(med(runs))}, {fmt_mb(rss)}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, num, den, bound, higher in TARGETS:
        cells = []
        for n in names:
            st = ratio_stats(results[n], num, den)
            if st is None:
                cells.append("-")
                continue
            met = st[0] >= bound if higher else st[0] <= bound
            cells.append(f"{st[0]:.2f}x {'met' if met else '**not met**'}")
        if any(c != "-" for c in cells):
            lines.append(f"| {label} (target {'>=' if higher else '<='} {bound:g}) | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        rss = [r[1] for c in RSS_TARGET_COMMANDS for r in results[n].get(c) or [] if r[1] is not None]
        cells.append("-" if not rss else f"{max(rss) / 1e6:.0f} MB {'met' if max(rss) <= GIB else '**not met**'}")
    lines.append("| max RSS of hardmine's commands (target <= 1 GiB) | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"(Wall: medians of {rounds} alternating rounds; max RSS: the largest of the rounds, GNU time's %M.)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
