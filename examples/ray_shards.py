"""One hardmine shard per Ray task, then one report: `hardmine.analyze` + `hardmine.merge` on Ray.

    pip install ./python "ray==2.60.0"
    python examples/ray_shards.py dump/ --states /shared/states --out analysis.json \
        --strategies ce,focal,ohem,ssd --gamma 2 --alpha 0.25

Each task analyses one shard (here: one Parquet file of the dump; shard by image, so every row
of an image is in one shard, as a dump written image by image is) with the same settings and
saves its accumulator state; the driver merges the states in dump order. The merged report is
the report of one run over all the files (counts and sums exact: docs/scale-out.md).

`ray.init()` without an address starts a local Ray; on a cluster pass `--address auto` and a
`--states` directory every node can write and the driver can read (NFS, a mounted bucket), and
make `hardmine` available to the workers (installed in their image, or `runtime_env`).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile

import ray

import hardmine


@ray.remote
def analyze_shard(files: list, state: str, settings: dict) -> str:
    """One shard: the analysis of `files`, its state saved to `state` (returns the path)."""
    hardmine.analyze(files, save_state=state, quiet=True, **settings)
    return state


def shards_of(dump: str) -> list:
    """One shard per Parquet file, in dump order (the order `hardmine analyze dump/` reads)."""
    files = sorted(glob.glob(os.path.join(dump, "**", "*.parquet"), recursive=True))
    if not files:
        raise SystemExit(f"{dump}: no Parquet files")
    return [[f] for f in files]


def run(shards: list, states_dir: str, **settings) -> dict:
    """Analyse every shard in its own Ray task, then merge the states into one report dict.

    `settings` are hardmine.analyze's keyword arguments (strategies, gamma, alpha, ...); every
    shard must use the same ones. Each task runs on one thread (`threads=1` unless given):
    Ray runs one task per CPU.
    """
    settings.setdefault("threads", 1)
    os.makedirs(states_dir, exist_ok=True)
    futures = [
        analyze_shard.remote(files, os.path.join(states_dir, f"shard-{i:05d}.state"), settings)
        for i, files in enumerate(shards)
    ]
    states = ray.get(futures)  # in submission order = dump order
    return hardmine.merge(states)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dump", help="the dump directory (one shard per Parquet file)")
    p.add_argument("--states", help="directory for the shard states (default: a temporary one)")
    p.add_argument("--out", help="write the merged report's JSON here (default: stdout)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--strategies", default="ce,alpha_ce,focal,ohem,ssd,sampled,ghm")
    p.add_argument("--gamma", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.25)
    args = p.parse_args(argv)

    ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="hardmine-states-") as tmp:
            report = run(shards_of(args.dump), args.states or tmp,
                         strategies=args.strategies, gamma=args.gamma, alpha=args.alpha)
    finally:
        ray.shutdown()
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
