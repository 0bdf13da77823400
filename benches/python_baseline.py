"""The Python a competent user would write instead of hardmine (the baseline of issues #6 and #10).

Computes, on a dense sigmoid dump (one row per anchor: `image_id`, `label` with -1 background and
-2 ignored, a `logits` list), with numpy over pyarrow, what

    hardmine analyze DUMP --strategies ce,alpha_ce,focal,ohem,ssd,sampled

reports in its `dataset`, `strategies` and `overlaps` sections, with hardmine's definitions
(docs/strategies.md):

- dataset: files, images, anchors, decisions, positive/negative decisions, ignored anchors;
- ce, alpha_ce, focal: per bucket (easy/hard by p_t >= tau, crossed with positive/negative) the
  decision count, loss, loss share and gradient-norm share, and the loss normalised like
  torchvision's RetinaNet head (mean over images of loss / max(1, positive decisions));
- ohem: per image the k anchors with the highest summed CE (ties: earlier row first), all their
  decisions; ssd: per image every positive anchor plus the 3 x #positives hardest negative
  anchors (capped at the negatives; none in an image without positives); sampled: the exact
  expectation of torchvision's BalancedPositiveNegativeSampler (B = 256, f = 0.5) per anchor,
  and the exact standard deviation of each bucket's selected count and CE. For each: per bucket
  count, selected, CE loss, shares, and the normalised loss; ssd's torchvision_normalized and
  sampled's torchvision_mean;
- overlaps: the decision-weighted Jaccard indices between the three selections (the sampler's
  with its inclusion probabilities) and the share of the focal loss inside the OHEM selection.

Not computed (hardmine's command computes them too): the 100 seeded draws of `sampled`, the
breakdowns, gradient density, normalisers and health checks. The comparison is therefore
conservative for hardmine.

The loss kernels follow hardmine's: everything in float64 from the float32 logit through one exp
and one log1p of the logit of the true outcome z (z = x for the labelled class, -x otherwise),
p_t = sigmoid(z), 1 - p_t = sigmoid(-z) without cancellation. Positive decisions are sparse (one
per foreground anchor), so every decision is first treated as a negative and the few positives are
flipped. The kernels run in blocks of 256k decisions (cache-sized temporaries) and reduce to
per-(bucket, anchor) sums with np.bincount; everything per image or per strategy derives from
those (4 x anchors) arrays, with a Python loop only over images for the top-k selections. Files
are read whole with pyarrow and processed in chunks of whole images of about 2M decisions. Rows of
an image must be contiguous and inside one file (as `hardmine generate` writes them); the script
checks this.

    python3 benches/python_baseline.py DUMP [--json OUT.json] [--k 128] [--gamma 2] [--alpha 0.25]
        [--tau 0.9] [--neg-pos-ratio 3] [--batch-size-per-image 256] [--positive-fraction 0.5]

Prints the totals and the wall time; `--json` writes them with hardmine's JSON keys, which
benches/compare.py compares with hardmine's output. Needs numpy and pyarrow (tested with numpy
2.4.6, pyarrow 26.0.1).
"""

import argparse
import glob
import json
import math
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BUCKETS = ["easy_negative", "hard_negative", "easy_positive", "hard_positive"]
CHUNK_DECISIONS = 1 << 21  # whole images per chunk, for the per-image selections
BLOCK_DECISIONS = 1 << 18  # decisions per block of the loss kernels


def topk(score, k):
    """Indices of the k highest scores; at equal score the earlier index wins (hardmine breaks
    ties by dump position)."""
    n = len(score)
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.arange(0)
    kth = np.partition(score, n - k)[n - k]  # the k-th highest value
    above = np.flatnonzero(score > kth)
    return np.concatenate((above, np.flatnonzero(score == kth)[: k - len(above)]))


def seg_sum(v, starts, lengths):
    """Sums of v over consecutive segments (images) given their starts and lengths (may be 0)."""
    out = np.zeros(len(starts))
    nonempty = lengths > 0
    if nonempty.any():
        out[nonempty] = np.add.reduceat(v, starts[nonempty])
    return out


def per_anchor_sums(x, lab, gamma, tau):
    """Per (bucket, anchor), as (4, anchors) arrays: decision count, CE, CE gradient norm, focal
    loss and focal gradient norm without alpha_t (alpha_t is constant within a bucket). `x`:
    (anchors, C) float32 logits of non-ignored anchors, `lab`: their labels. Works in blocks of
    about BLOCK_DECISIONS decisions, which keeps the temporaries in cache (2.5x faster than whole
    images)."""
    n, c = x.shape
    out = [np.zeros((4, n)) for _ in range(5)]
    step = max(1, BLOCK_DECISIONS // c)
    for s in range(0, n, step):
        xb, lb = x[s : s + step], lab[s : s + step]
        a = len(lb)
        pr = np.flatnonzero(lb >= 0)
        pc = lb[pr]
        # z: the logit of the true outcome (-x for a negative decision, x for a positive).
        z = np.negative(xb, dtype=np.float64)
        z[pr, pc] = -z[pr, pc]
        e = np.abs(z)
        np.negative(e, out=e)
        np.exp(e, out=e)  # e = exp(-|z|)
        lg = np.log1p(e)  # log(1 + exp(-|z|))
        inv = e + 1.0
        np.reciprocal(inv, out=inv)  # 1 / (1 + e)
        ei = np.multiply(e, inv, out=e)
        nonneg = z >= 0
        p_t = np.where(nonneg, inv, ei)  # sigmoid(z)
        q = np.where(nonneg, ei, inv)  # 1 - p_t = sigmoid(-z) = |p - y|, the CE gradient norm
        if gamma not in (0, 1, 2):
            ln_q = np.where(nonneg, -z - lg, -lg)
        ce = np.minimum(z, 0.0, out=z)
        np.subtract(lg, ce, out=ce)  # softplus(-z) = max(-z, 0) + log1p(exp(-|z|))
        if gamma == 0:
            factor = np.ones_like(q)
        elif gamma == 1:
            factor = q
        elif gamma == 2:
            factor = np.multiply(q, q, out=inv)
        else:
            factor = np.exp(gamma * ln_q)
        fl = np.multiply(factor, ce, out=ei)  # focal loss without alpha_t
        fg = np.multiply(p_t, ce, out=lg)
        fg *= gamma
        fg += q
        fg *= factor  # |dFL/dx| without alpha_t: (1 - p_t)^gamma ((1 - p_t) + gamma p_t CE)
        key = (p_t < tau).astype(np.int64)  # the bucket: 2 * positive + hard
        key[pr, pc] += 2
        key += np.arange(0, 4 * a, 4, dtype=np.int64)[:, None]  # 4 * anchor + bucket
        key = key.ravel()
        m = 4 * a
        out[0][:, s : s + a] = np.bincount(key, minlength=m).reshape(a, 4).T
        for o, v in zip(out[1:], (ce, q, fl, fg)):
            o[:, s : s + a] = np.bincount(key, weights=v.ravel(), minlength=m).reshape(a, 4).T
    return out


class Totals:
    """Per-bucket sums of one strategy plus the sum over images of loss / max(1, positives)."""

    def __init__(self):
        self.count = np.zeros(4, dtype=np.int64)
        self.selected = np.zeros(4)
        self.loss = np.zeros(4)
        self.grad = np.zeros(4)
        self.normalized = 0.0

    def report(self, name, n_images, extra=None):
        total, grad = self.loss.sum(), self.grad.sum()
        share = lambda x, t: float(x / t) if t > 0 else 0.0
        return {
            "name": name,
            "selected": float(self.selected.sum()),
            "loss": {"total": float(total), "normalized": self.normalized / max(1, n_images)},
            "buckets": {
                b: {
                    "count": int(self.count[i]),
                    "selected": float(self.selected[i]),
                    "loss": float(self.loss[i]),
                    "loss_share": share(self.loss[i], total),
                    "grad_share": share(self.grad[i], grad),
                }
                for i, b in enumerate(BUCKETS)
            },
            "extra": extra or {},
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dump", help="a directory of .parquet files (searched recursively) or one file")
    ap.add_argument("--json", help="write the totals here, with hardmine's JSON keys")
    ap.add_argument("--k", type=int, default=128, help="OHEM anchors per image")
    ap.add_argument("--gamma", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.25, help="negative: no alpha weighting")
    ap.add_argument("--tau", type=float, default=0.9, help="easy when p_t >= tau")
    ap.add_argument("--neg-pos-ratio", type=int, default=3)
    ap.add_argument("--batch-size-per-image", type=int, default=256)
    ap.add_argument("--positive-fraction", type=float, default=0.5)
    args = ap.parse_args()
    if os.path.isdir(args.dump):
        files = sorted(glob.glob(os.path.join(args.dump, "**", "*.parquet"), recursive=True))
    else:
        files = [args.dump]
    if not files:
        sys.exit(f"error: no .parquet file in {args.dump}")
    for f in files:
        names = pq.read_schema(f).names
        if "logits" not in names or "label" not in names:
            sys.exit(
                f"error: {f}: the baseline handles dense sigmoid dumps (image_id, label, logits); "
                f"this file has {names} (binary or probability dumps are not supported)"
            )

    start = time.perf_counter()
    gamma, alpha, tau = args.gamma, args.alpha, args.tau
    # alpha_t is constant within a bucket (buckets split negatives from positives).
    w = np.array([1 - alpha, 1 - alpha, alpha, alpha]) if alpha >= 0 else np.ones(4)
    want_pos = math.floor(args.batch_size_per_image * args.positive_fraction)  # int(B f)

    ce_t, alpha_t, focal_t, ohem_t, ssd_t, samp_t = (Totals() for _ in range(6))
    var_count, var_loss = np.zeros(4), np.zeros(4)
    jac = {p: [0.0, 0.0] for p in ("ohem_ssd", "ohem_sampled", "ssd_sampled")}
    focal_in_ohem = [0.0, 0.0]
    ds = dict(files=len(files), images=0, anchors=0, decisions=0, positives=0, negatives=0, ignored=0)
    seen = set()
    width = None

    for f in files:
        table = pq.read_table(f, columns=["image_id", "label", "logits"])
        n_rows = table.num_rows
        if n_rows == 0:
            continue
        image = table.column("image_id").to_numpy()
        label_all = table.column("label").to_numpy().astype(np.int64, copy=False)
        logits = table.column("logits")
        c = logits.type.list_size if pa.types.is_fixed_size_list(logits.type) else None
        if c is None:  # a variable-size list column: every row must have the same length
            c = len(logits.chunk(0)[0])
        if width is not None and c != width:
            sys.exit(f"error: {f}: {c} classes, earlier files have {width}")
        width = c
        if label_all.min() < -2 or label_all.max() >= c:
            sys.exit(f"error: {f}: labels must be -2, -1 or a class in [0, {c})")
        # Image runs; each image once in the dump.
        starts = np.concatenate(([0], np.flatnonzero(image[1:] != image[:-1]) + 1, [n_rows]))
        keys = image[starts[:-1]].tolist()
        if len(set(keys)) != len(keys) or not seen.isdisjoint(keys):
            sys.exit(f"error: {f}: the rows of an image must be contiguous and inside one file")
        seen.update(keys)
        ds["images"] += len(keys)
        ds["anchors"] += n_rows
        ds["ignored"] += int((label_all == -2).sum())
        # Chunks of whole images of about CHUNK_DECISIONS decisions.
        bounds = [0]
        for i in range(1, len(starts)):
            if (starts[i] - starts[bounds[-1]]) * c >= CHUNK_DECISIONS or i == len(starts) - 1:
                bounds.append(i)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            r0, r1 = starts[lo], starts[hi]
            n_img = hi - lo
            lab = label_all[r0:r1]
            col = logits.slice(r0, r1 - r0)
            arr = col.chunk(0) if col.num_chunks == 1 else pa.concat_arrays(col.chunks)
            x = arr.flatten().to_numpy(zero_copy_only=False).reshape(r1 - r0, c)
            keep = lab != -2  # ignored anchors give no decisions
            if keep.all():
                img_n = np.diff(starts[lo : hi + 1])
            else:
                img_n = np.add.reduceat(keep.astype(np.int64), starts[lo:hi] - r0)
                x, lab = x[keep], lab[keep]
            # Anchors of image i: a_start[i] to a_start[i] + img_n[i].
            a_start = np.concatenate(([0], np.cumsum(img_n)[:-1]))
            n = len(lab)
            pos_idx = np.flatnonzero(lab >= 0)  # positive anchors (one positive decision each)
            pos_img = np.searchsorted(a_start, pos_idx, side="right") - 1
            cnt, ce, g, fl, fg = per_anchor_sums(x, lab, gamma, tau)

            # Per anchor, per image, per bucket.
            a_ce = ce.sum(axis=0)
            a_focal = w @ fl
            n_pos = np.bincount(pos_img, minlength=n_img)  # positive anchors = positive decisions
            norm = np.maximum(n_pos, 1.0)
            count_b = cnt.sum(axis=1).astype(np.int64)
            ce_b, g_b = ce.sum(axis=1), g.sum(axis=1)
            ds["decisions"] += int(count_b.sum())
            ds["positives"] += int(count_b[2] + count_b[3])
            ds["negatives"] += int(count_b[0] + count_b[1])

            # ce, alpha_ce, focal: every decision.
            for t, loss_b, grad_b, a_loss in (
                (ce_t, ce_b, g_b, a_ce),
                (alpha_t, w * ce_b, w * g_b, w @ ce),
                (focal_t, w * fl.sum(axis=1), w * fg.sum(axis=1), a_focal),
            ):
                t.count += count_b
                t.selected += count_b
                t.loss += loss_b
                t.grad += grad_b
                t.normalized += float((seg_sum(a_loss, a_start, img_n) / norm).sum())

            # ohem and ssd: per image, by the anchors' summed CE.
            sel_o, sel_s = [], []
            loss_o, loss_s = np.zeros(n_img), np.zeros(n_img)
            for i in range(n_img):
                s0, s1 = a_start[i], a_start[i] + img_n[i]
                if s0 == s1:
                    continue
                sc = a_ce[s0:s1]
                o = s0 + topk(sc, args.k)
                sel_o.append(o)
                loss_o[i] = a_ce[o].sum()
                if n_pos[i] > 0:
                    # Every positive, then the hardest negatives (positives can never be picked
                    # again: -inf is below every CE, and m <= the negatives).
                    p = pos_idx[pos_img == i] - s0
                    neg_sc = sc.copy()
                    neg_sc[p] = -np.inf
                    m = min(args.neg_pos_ratio * len(p), len(sc) - len(p))
                    sel = np.concatenate((s0 + p, s0 + topk(neg_sc, m)))
                    sel_s.append(sel)
                    loss_s[i] = a_ce[sel].sum()
            sel_o = np.concatenate(sel_o) if sel_o else np.arange(0)
            sel_s = np.concatenate(sel_s) if sel_s else np.arange(0)
            for t, sel, per_img in ((ohem_t, sel_o, loss_o), (ssd_t, sel_s, loss_s)):
                t.count += count_b
                t.selected += cnt[:, sel].sum(axis=1)
                t.loss += ce[:, sel].sum(axis=1)
                t.grad += g[:, sel].sum(axis=1)
                t.normalized += float((per_img / norm).sum())

            # sampled: per image, n_pos of the positive anchors and n_neg of the negative ones,
            # each kept with probability n / N (the expectation is exact).
            n_neg = img_n - n_pos
            k_pos = np.minimum(n_pos, want_pos)
            k_neg = np.minimum(n_neg, args.batch_size_per_image - k_pos)
            p_pos = np.divide(k_pos, n_pos, out=np.zeros(n_img), where=n_pos > 0)
            p_neg = np.divide(k_neg, n_neg, out=np.zeros(n_img), where=n_neg > 0)
            pi = np.repeat(p_neg, img_n)
            pi[pos_idx] = p_pos[pos_img]
            samp_t.count += count_b
            samp_t.selected += cnt @ pi
            samp_t.loss += ce @ pi
            samp_t.grad += g @ pi
            samp_t.normalized += float((seg_sum(pi * a_ce, a_start, img_n) / norm).sum())
            # Exact variance of drawing k of N without replacement in each stratum (the image's
            # positive or negative anchors): k (N - k) / (N - 1) times the population variance
            # of the per-anchor values (two passes: mean, then squared deviations).
            def factor(k, big_n):
                ok = (big_n > 1) & (k > 0) & (k < big_n)
                out = np.zeros(n_img)
                out[ok] = k[ok] * (big_n[ok] - k[ok]) / (big_n[ok] - 1) / big_n[ok]
                return out

            f_neg, f_pos = factor(k_neg, n_neg), factor(k_pos, n_pos)
            # Negative anchors have only negative decisions, C of them: buckets 2 and 3 are 0, and
            # the count in bucket 1 is C minus the count in bucket 0 (the same deviations).
            for v, acc, bs in ((cnt[0], var_count, (0, 1)), (ce[0], var_loss, (0,)), (ce[1], var_loss, (1,))):
                v_neg = v.copy()
                v_neg[pos_idx] = 0.0
                mean = seg_sum(v_neg, a_start, img_n) / np.maximum(n_neg, 1)
                dev = v - np.repeat(mean, img_n)
                dev *= dev
                dev[pos_idx] = 0.0
                contrib = f_neg @ seg_sum(dev, a_start, img_n)
                for b in bs:
                    acc[b] += contrib
            for vals, acc in ((cnt, var_count), (ce, var_loss)):
                vp = vals[:, pos_idx]
                for b in range(4):
                    mean = np.bincount(pos_img, weights=vp[b], minlength=n_img) / np.maximum(n_pos, 1)
                    dev = vp[b] - mean[pos_img]
                    acc[b] += f_pos @ np.bincount(pos_img, weights=dev * dev, minlength=n_img)

            # Overlaps, decision-weighted (every anchor has C decisions); the sampler's selection
            # enters with its inclusion probabilities: sum min(a, b) / sum max(a, b).
            both = len(np.intersect1d(sel_o, sel_s, assume_unique=True))
            jac["ohem_ssd"][0] += c * both
            jac["ohem_ssd"][1] += c * (len(sel_o) + len(sel_s) - both)
            pi_sum = float(pi.sum())
            for name, sel in (("ohem_sampled", sel_o), ("ssd_sampled", sel_s)):
                inside = float(pi[sel].sum())
                jac[name][0] += c * inside
                jac[name][1] += c * (len(sel) + pi_sum - inside)
            focal_in_ohem[0] += float(a_focal[sel_o].sum())
            focal_in_ohem[1] += float(a_focal.sum())

    elapsed = time.perf_counter() - start
    n_img = ds["images"]
    sel = float(samp_t.selected.sum())
    ratio = lambda s: s[0] / s[1] if s[1] > 0 else 0.0
    out = {
        "dataset": ds,
        "strategies": [
            ce_t.report("ce", n_img),
            alpha_t.report("alpha_ce", n_img),
            focal_t.report("focal", n_img),
            ohem_t.report("ohem", n_img),
            ssd_t.report("ssd", n_img, {"torchvision_normalized": float(ssd_t.loss.sum()) / max(1, ds["positives"])}),
            samp_t.report(
                "sampled",
                n_img,
                {
                    "torchvision_mean": float(samp_t.loss.sum()) / sel if sel > 0 else 0.0,
                    "selected_std": {b: math.sqrt(max(v, 0.0)) for b, v in zip(BUCKETS, var_count)},
                    "loss_std": {b: math.sqrt(max(v, 0.0)) for b, v in zip(BUCKETS, var_loss)},
                },
            ),
        ],
        "overlaps": {
            "jaccard": [
                {"a": "ohem", "b": "ssd", "jaccard": ratio(jac["ohem_ssd"])},
                {"a": "ohem", "b": "sampled", "jaccard": ratio(jac["ohem_sampled"])},
                {"a": "ssd", "b": "sampled", "jaccard": ratio(jac["ssd_sampled"])},
            ],
            "focal_share_in_ohem": ratio(focal_in_ohem),
        },
    }
    print(f"{len(files)} files, {ds['images']} images, {ds['decisions']} decisions in {elapsed:.2f} s")
    for s in out["strategies"]:
        bk = s["buckets"]
        print(
            f"{s['name']:9s} total {s['loss']['total']:.10g}  normalized {s['loss']['normalized']:.10g}  "
            + "  ".join(f"{b} {bk[b]['loss']:.10g}" for b in BUCKETS)
        )
    print("jaccard " + ", ".join(f"{j['a']}~{j['b']} {j['jaccard']:.6g}" for j in out["overlaps"]["jaccard"]))
    if args.json:
        out["elapsed_seconds"] = elapsed
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
