"""The straightforward Python a user would write instead of hardmine (issue #6's baseline).

Computes, on a dense sigmoid dump, what `hardmine analyze DUMP --strategies ce,alpha_ce,focal,ohem`
computes: CE, alpha-CE and focal-loss sums per bucket (easy/hard by p_t >= 0.9, crossed with
positive/negative) and per-image OHEM (top k anchors by their summed CE), with numpy over pyarrow,
one file at a time, vectorised wherever numpy allows (a Python loop only over images for the top k).
It prints the totals so they can be compared with hardmine's JSON, and the wall time.

    python3 benches/python_baseline.py DUMP_DIR [--k 128] [--gamma 2] [--alpha 0.25]

Assumes each image's rows are inside one file (as `hardmine generate` writes them). Needs numpy and
pyarrow (tested with numpy 2.4.6, pyarrow 26.0.1). docs/benchmarks.md has the comparison.
"""

import argparse
import glob
import os
import time

import numpy as np
import pyarrow.parquet as pq

BUCKETS = ["easy_negative", "hard_negative", "easy_positive", "hard_positive"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--gamma", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.25)
    ap.add_argument("--tau", type=float, default=0.9)
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.dump, "**", "*.parquet"), recursive=True))
    start = time.perf_counter()
    loss = {name: np.zeros(4) for name in ("ce", "alpha_ce", "focal", "ohem")}
    count = np.zeros(4, dtype=np.int64)
    decisions = 0
    for f in files:
        t = pq.read_table(f, columns=["image_id", "label", "logits"])
        image = t.column("image_id").to_numpy()
        label = t.column("label").to_numpy()
        logits = t.column("logits").combine_chunks()
        c = len(logits[0])
        x = logits.flatten().to_numpy().reshape(len(label), c).astype(np.float64)
        keep = label != -2  # ignored anchors give no decisions
        image, label, x = image[keep], label[keep], x[keep]
        y = (label[:, None] == np.arange(c)[None, :]).astype(np.float64)
        # Stable binary cross-entropy with logits (torch's formula).
        ce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
        p = 1.0 / (1.0 + np.exp(-x))
        p_t = p * y + (1 - p) * (1 - y)
        alpha_t = args.alpha * y + (1 - args.alpha) * (1 - y)
        focal = alpha_t * (1 - p_t) ** args.gamma * ce
        bucket = (2 * (y > 0) + (p_t < args.tau)).astype(np.int64).ravel()
        count += np.bincount(bucket, minlength=4)
        decisions += bucket.size
        for name, v in (("ce", ce), ("alpha_ce", alpha_t * ce), ("focal", focal)):
            loss[name] += np.bincount(bucket, weights=v.ravel(), minlength=4)
        # OHEM: per image, the k anchors with the highest summed CE keep all their decisions.
        anchor_ce = ce.sum(axis=1)
        bounds = np.flatnonzero(np.diff(image)) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [len(image)]))
        selected = np.zeros(len(image), dtype=bool)
        for s, e in zip(starts, ends):
            n = e - s
            if n <= args.k:
                selected[s:e] = True
            else:
                top = np.argpartition(-anchor_ce[s:e], args.k - 1)[: args.k]
                selected[s + top] = True
        sel = np.repeat(selected, c)
        loss["ohem"] += np.bincount(bucket[sel], weights=ce.ravel()[sel], minlength=4)
    elapsed = time.perf_counter() - start
    print(f"{len(files)} files, {decisions} decisions in {elapsed:.2f} s")
    print("bucket counts: " + ", ".join(f"{b} {n}" for b, n in zip(BUCKETS, count)))
    for name, v in loss.items():
        print(f"{name:9s} total {v.sum():.10g}  " + "  ".join(f"{b} {x:.10g}" for b, x in zip(BUCKETS, v)))


if __name__ == "__main__":
    main()
