"""Capture adapter for mmdetection 3.x dense heads that use ``PseudoSampler``.

Supported: mmdetection 3.x (checked against the source of 3.3.0; mmengine 0.10) heads whose
``loss_by_feat``, ``loss_by_feat_single``, ``get_targets`` and ``_get_targets_single`` are
``AnchorHead``'s (``RetinaHead``, ``RetinaSepBNHead``, a plain ``AnchorHead``) or whose loss is
``SSDHead``'s (``SSDHead``), with ``train_cfg.sampler`` unset or ``PseudoSampler`` and
``pos_weight`` <= 0 or 1. Everything else is refused with the reason:

- ``ATSSHead`` (and heads derived from it: GFL, PAA, ...): ``get_targets`` returns the anchors
  first (``(anchors_list, labels_list, ...)``) and the loss adds centerness; its targets are
  not the anchor-head ones read here.
- heads with a real sampler (``RPNHead`` with ``RandomSampler``, any ``train_cfg.sampler``
  other than ``PseudoSampler``): anchors the sampler did not draw get label weight 0 and would
  be read as "ignored", and the draw is redone on every ``get_targets`` call. hardmine's
  ``sampled`` strategy simulates such sampling on a dump of all anchors instead.
- any other head overriding those methods: its loss is not the one this adapter reproduces.

Conventions (``AnchorHead._get_targets_single``): ``labels`` holds the class ``0..C-1`` for
positives and ``num_classes`` (C) for background and for anchors outside the image;
``label_weights`` is 1 for sampled positives and negatives and 0 for the rest (ignored by the
assigner, or outside the image). Dump: sigmoid heads (``use_sigmoid_cls``): ``C -> -1``, weight
0 -> ``-2``; softmax heads (SSDHead, ``cls_out_channels = C + 1``): labels stay (background is
the last index C: ``hardmine analyze --activation softmax --background-class C``), weight 0 ->
``-2``.

Normaliser: ``avg_factor`` is the sum over images of ``SamplingResult.num_pos`` =
max(1, positives in the image) (:func:`mmdet_avg_factor`), not the batch's positives: the two
differ whenever an image has no positive. The loss is ``sum of the classification loss /
avg_factor``; each file stores the step's ``avg_factor`` in its ``hardmine.capture`` metadata,
so mmdetection's ``loss_cls`` (summed over levels) = hardmine's focal ``loss.total`` /
``avg_factor`` for a one-step analysis.

mmdetection needs compiled mmcv ops and is not installed in the test environment: the functions
here are framework-free (torch and numpy only) and tested on tensors and head objects built with
mmdetection's documented conventions. The mmengine ``Hook`` is in
:mod:`hardmine.capture.mmdet_hook`, which imports mmengine.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import numpy as np

from ._common import StepPolicy, level_of_stride, levels_from_counts
from .writer import DumpWriter, _as_numpy

__all__ = ["mmdet_labels", "mmdet_avg_factor", "check_mmdet_head", "MMDetHeadCapture",
           "UnsupportedHeadError"]


class UnsupportedHeadError(TypeError):
    """An mmdetection head whose loss the capture cannot reproduce; the message says why."""


def mmdet_labels(labels: Any, label_weights: Any, num_classes: int,
                 use_sigmoid: bool = True) -> np.ndarray:
    """hardmine labels from mmdetection ``labels`` / ``label_weights`` of one image.

    Args:
        labels: int ``[A]``: ``0..C-1`` positive class, ``C`` background.
        label_weights: float ``[A]``: 1 for anchors in the loss, 0 for ignored ones.
        num_classes: C (``head.num_classes``).
        use_sigmoid: True for sigmoid heads (background becomes -1), False for softmax heads
            (background stays C, the last of the C + 1 columns).

    Raises:
        ValueError: a label outside ``0..C`` or a weight other than 0 and 1 (``pos_weight``
            set: the dense layout has no per-anchor weight).
    """
    lab = _as_numpy(labels, "labels").reshape(-1)
    w = _as_numpy(label_weights, "label_weights").reshape(-1)
    if lab.shape != w.shape:
        raise ValueError(f"{lab.shape[0]} labels but {w.shape[0]} label weights")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {lab.dtype}")
    bad = (lab < 0) | (lab > num_classes)
    if bad.any():
        j = int(np.argmax(bad))
        raise ValueError(f"labels[{j}] = {int(lab[j])} is outside mmdetection's 0..C-1 classes "
                         f"and C={num_classes} background")
    badw = (w != 0) & (w != 1)
    if badw.any():
        j = int(np.argmax(badw))
        raise ValueError(
            f"label_weights[{j}] = {float(w[j])}: only weights 0 (ignored) and 1 fit the dense "
            "dump. Set train_cfg.pos_weight=-1 (weight 1), or write a binary dump with a "
            "`weight` column")
    out = lab.astype(np.int32, copy=True)
    if use_sigmoid:
        out[lab == num_classes] = -1
    out[w == 0] = -2
    return out


def mmdet_avg_factor(labels_per_image: Sequence[Any], num_classes: int) -> int:
    """mmdetection's ``avg_factor`` under PseudoSampler: sum over images of max(1, positives).

    A positive is an anchor labelled ``0..C-1`` (``SamplingResult.num_pos`` =
    ``max(pos_inds.numel(), 1)``; ``avg_factor_with_neg=False`` for PseudoSampler).
    """
    total = 0
    for lab in labels_per_image:
        lab = _as_numpy(lab, "labels").reshape(-1)
        total += max(1, int(((lab >= 0) & (lab < num_classes)).sum()))
    return total


def _defined_in(obj: Any, name: str) -> Optional[str]:
    fn = getattr(type(obj), name, None)
    if fn is None:
        return None
    return getattr(fn, "__qualname__", "").split(".")[0] or None


def check_mmdet_head(head: Any) -> str:
    """Return ``"anchor"`` (AnchorHead loss, per level) or ``"ssd"`` (SSDHead loss, per image).

    Raises:
        UnsupportedHeadError: with the reason and what to do, for ATSSHead and its
            derivatives, RPN heads, heads with a real sampler, ``pos_weight`` other than 1, and
            heads that override the loss or target code.
    """
    mro = [c.__name__ for c in type(head).__mro__]
    name = type(head).__name__
    if "ATSSHead" in mro:
        raise UnsupportedHeadError(
            f"{name} is an ATSSHead: its get_targets returns the anchors first "
            "((anchors_list, labels_list, label_weights_list, ...)), so labels would be read as "
            "weights, and its loss adds a centerness term. hardmine.capture supports RetinaHead "
            "and SSDHead (PseudoSampler heads); dump an ATSS head yourself with DumpWriter from "
            "the labels and label_weights inside its loss_by_feat_single.")
    if "RPNHead" in mro:
        raise UnsupportedHeadError(
            f"{name} is an RPN head: it samples anchors (RandomSampler), so anchors it did not "
            "draw get label weight 0 and the draw changes on every get_targets call. Dump all "
            "anchors before sampling and use hardmine's `sampled` strategy (--preset rpn).")
    sampler = getattr(head, "sampler", None)
    sampler_name = type(sampler).__name__ if sampler is not None else None
    if sampler_name != "PseudoSampler":
        raise UnsupportedHeadError(
            f"{name} uses {sampler_name or 'no'} sampler: only PseudoSampler heads are "
            "supported, because with a real sampler the anchors it did not draw get label "
            "weight 0 (indistinguishable from ignored anchors) and the draw differs between "
            "calls. Set train_cfg.sampler=dict(type='PseudoSampler') to dump every anchor, and "
            "let hardmine's `sampled` strategy simulate the sampling.")
    train_cfg = getattr(head, "train_cfg", None) or {}
    pos_weight = train_cfg.get("pos_weight", -1) if hasattr(train_cfg, "get") else -1
    if pos_weight is not None and pos_weight > 0 and pos_weight != 1:
        raise UnsupportedHeadError(
            f"{name} has train_cfg.pos_weight={pos_weight}: positives get that label weight, "
            "which the dense dump cannot carry. Use pos_weight=-1, or a binary dump with a "
            "`weight` column.")
    methods = {m: _defined_in(head, m) for m in
               ("loss_by_feat", "loss_by_feat_single", "get_targets", "_get_targets_single")}
    if all(v == "AnchorHead" for v in methods.values()):
        return "anchor"
    if (methods["loss_by_feat"] == "SSDHead" and methods["loss_by_feat_single"] == "SSDHead"
            and methods["get_targets"] == "AnchorHead"
            and methods["_get_targets_single"] == "AnchorHead"):
        return "ssd"
    own = ", ".join(f"{m} from {v}" for m, v in methods.items())
    raise UnsupportedHeadError(
        f"{name} is not supported: hardmine.capture supports AnchorHead-family heads "
        "(RetinaHead, RetinaSepBNHead) and SSDHead with PseudoSampler, whose loss code it "
        f"reproduces; this head has {own}. Dump it yourself with DumpWriter inside its "
        "loss_by_feat_single.")


def _first_level(head: Any) -> int:
    gen = getattr(head, "prior_generator", None) or getattr(head, "anchor_generator", None)
    strides = getattr(gen, "strides", None)
    if not strides:
        raise ValueError(f"{type(head).__name__} has no prior_generator.strides: pass first_level=")
    s = strides[0]
    return level_of_stride(s[0] if isinstance(s, (tuple, list)) else s)


class MMDetHeadCapture:
    """Wraps an mmdetection head's loss methods to dump what the classification loss sees.

    Framework-free (torch only): it reads the tensors mmdetection passes to
    ``loss_by_feat_single`` and so needs no second ``get_targets`` call (which, with a real
    sampler, would draw another sample). Normally installed by
    :class:`hardmine.capture.mmdet_hook.HardmineCaptureHook`.

    Args:
        head: the model's ``bbox_head`` (checked by :func:`check_mmdet_head`).
        writer: the :class:`DumpWriter`.
        every, max_steps, start_step: which loss calls to capture (see ``StepPolicy``).
        boxes: also write the anchors' boxes.
        first_level: FPN level of the first feature map (default: log2 of the prior
            generator's first stride).

    Attribute ``step`` may be set before each iteration (the hook sets ``runner.iter``); when
    None the step is the loss-call count. Attribute ``enabled`` (default True) turns capturing
    off without unwrapping.
    """

    def __init__(self, head: Any, writer: DumpWriter, *, every: int = 1,
                 max_steps: Optional[int] = None, start_step: int = 0, boxes: bool = True,
                 first_level: Optional[int] = None) -> None:
        self.kind = check_mmdet_head(head)
        self.head = head
        self.num_classes = int(head.num_classes)
        self.use_sigmoid = bool(getattr(head, "use_sigmoid_cls", self.kind == "anchor"))
        if self.kind == "ssd":
            self.use_sigmoid = False
        self.columns = int(head.cls_out_channels)
        expected = self.num_classes if self.use_sigmoid else self.num_classes + 1
        if self.columns != expected:
            raise UnsupportedHeadError(
                f"{type(head).__name__}: cls_out_channels={self.columns} but num_classes="
                f"{self.num_classes} with use_sigmoid={self.use_sigmoid} implies {expected}")
        self.writer = writer
        writer.activation = "sigmoid" if self.use_sigmoid else "softmax"
        self.policy = StepPolicy(every, max_steps, start_step)
        self.boxes = boxes
        self.first_level = _first_level(head) if first_level is None else first_level
        self.step: Optional[int] = None
        self.enabled = True
        if self.use_sigmoid:
            self.analyze_args = ["--strategies", "focal"]
            loss = getattr(head, "loss_cls", None)
            for attr, flag in (("gamma", "--gamma"), ("alpha", "--alpha")):
                if hasattr(loss, attr):
                    self.analyze_args += [flag, f"{getattr(loss, attr):g}"]
        else:
            ratio = (getattr(head, "train_cfg", None) or {}).get("neg_pos_ratio", 3)
            self.analyze_args = ["--activation", "softmax", "--background-class",
                                 str(self.num_classes), "--strategies", "ssd",
                                 "--neg-pos-ratio", f"{ratio:g}"]
        writer.metadata.update({
            "framework": "mmdetection", "model": type(head).__name__,
            "analyze_args": self.analyze_args,
            "loss_equals": "strategy loss.total / avg_factor (metadata), one step per analysis",
        })
        self._active = False
        self._records: list[tuple] = []
        self._level_counts: Optional[list[int]] = None
        self._orig_feat = head.loss_by_feat
        self._orig_single = head.loss_by_feat_single
        head.loss_by_feat = self._loss_by_feat
        head.loss_by_feat_single = self._loss_by_feat_single

    def _loss_by_feat(self, cls_scores: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        step = self.policy.next() if self.enabled else None
        self._active = step is not None
        self._records = []
        if self._active:
            # Per level: [N, A_l * K, H, W] -> A_l * H * W anchors (the head's own split).
            counts = []
            for k, s in enumerate(cls_scores):
                ch, h, w = int(s.shape[1]), int(s.shape[2]), int(s.shape[3])
                if ch % self.columns:
                    raise RuntimeError(f"level {k}: {ch} channels, not a multiple of {self.columns}")
                counts.append(ch // self.columns * h * w)
            self._level_counts = counts
        try:
            out = self._orig_feat(cls_scores, *args, **kwargs)
        finally:
            active, self._active = self._active, False
        if active:
            self._write(self.step if self.step is not None else step)
            self.policy.done()
        return out

    def _loss_by_feat_single(self, cls_score: Any, bbox_pred: Any, anchors: Any, labels: Any,
                             label_weights: Any, bbox_targets: Any, bbox_weights: Any,
                             avg_factor: Any) -> Any:
        if self._active:
            self._records.append((cls_score.detach(), anchors.detach() if hasattr(anchors, "detach")
                                  else anchors, labels.detach(), label_weights.detach(),
                                  float(avg_factor)))
        return self._orig_single(cls_score, bbox_pred, anchors, labels, label_weights,
                                 bbox_targets, bbox_weights, avg_factor=avg_factor)

    def _write(self, step: int) -> None:
        import torch

        if not self._records:
            raise RuntimeError("loss_by_feat did not call loss_by_feat_single: nothing captured")
        counts = self._level_counts
        levels = levels_from_counts(counts, self.first_level)
        with torch.no_grad():
            if self.kind == "anchor":
                if len(self._records) != len(counts):
                    raise RuntimeError(f"{len(self._records)} loss_by_feat_single calls for "
                                       f"{len(counts)} levels")
                # Per level: cls_score [N, A*K, H, W] -> [N, H*W*A, K] as loss_by_feat_single does.
                n_img = self._records[0][2].shape[0]
                scores = torch.cat([r[0].permute(0, 2, 3, 1).reshape(n_img, -1, self.columns)
                                    for r in self._records], 1)
                labels = torch.cat([r[2].reshape(n_img, -1) for r in self._records], 1)
                weights = torch.cat([r[3].reshape(n_img, -1) for r in self._records], 1)
                anchors = torch.cat([_box_tensor(r[1]).reshape(n_img, -1, 4)
                                     for r in self._records], 1)
                per_img = [(scores[i], labels[i], weights[i], anchors[i]) for i in range(n_img)]
            else:
                per_img = [(r[0], r[2], r[3], _box_tensor(r[1])) for r in self._records]
            avg = {r[4] for r in self._records}
            if len(avg) != 1:
                raise RuntimeError(f"different avg_factor values within one step: {sorted(avg)}")
            avg_factor = avg.pop()
            total = sum(counts)
            out_labels, out_logits, out_boxes = [], [], []
            for i, (s, lab, w, a) in enumerate(per_img):
                if s.shape[0] != total or lab.numel() != total:
                    raise RuntimeError(f"image {i}: {s.shape[0]} scores, {lab.numel()} labels, "
                                       f"but the head's levels hold {total} anchors")
                out_labels.append(mmdet_labels(lab.cpu(), w.cpu(), self.num_classes,
                                               self.use_sigmoid))
                out_logits.append(s.float().cpu())
                out_boxes.append(a.float().cpu())
            expected = mmdet_avg_factor([lab for _, lab, _, _ in per_img], self.num_classes)
            if abs(expected - avg_factor) > 1e-6 * max(1.0, avg_factor):
                warnings.warn(
                    f"mmdetection passed avg_factor={avg_factor:g}, but PseudoSampler's sum over "
                    f"images of max(1, positives) is {expected}: the head's normaliser is not the "
                    "one this adapter assumes; compare losses with the stored avg_factor")
            self.writer.write_step(
                step, out_labels, out_logits, levels=[levels] * len(out_labels),
                boxes=out_boxes if self.boxes else None,
                extra_metadata={"avg_factor": avg_factor, "level_counts": counts})
        self._records = []

    def remove(self) -> None:
        """Restore the head's methods (idempotent)."""
        d = self.head.__dict__
        if d.get("loss_by_feat") == self._loss_by_feat:
            del self.head.loss_by_feat
        if d.get("loss_by_feat_single") == self._loss_by_feat_single:
            del self.head.loss_by_feat_single


def _box_tensor(boxes: Any) -> Any:
    """The tensor of an mmdetection box (a Tensor or a BaseBoxes with ``.tensor``)."""
    t = getattr(boxes, "tensor", boxes)
    return t
