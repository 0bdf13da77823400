"""Capture adapter for detectron2's RetinaNet (``detectron2.modeling.meta_arch.RetinaNet``).

Supported: detectron2 0.6 and its main branch (``RetinaNet.losses(anchors, pred_logits,
gt_labels, pred_anchor_deltas, gt_boxes)``, called by ``forward`` / ``forward_training`` with
``gt_labels`` from ``label_anchors``), with the stock ``losses``. Subclasses that override
``losses`` (FCOS in detectron2/projects, custom heads) are refused: their loss is not this one.

detectron2's conventions (``RetinaNet.label_anchors``): ``gt_labels`` per image is ``[R]`` with
values in ``{-1, 0, ..., K}``, ``-1`` = ignored, ``K`` (``num_classes``) = background;
``pred_logits`` is a list per level of ``[N, Hi*Wi*Ai, K]``. The dump maps ``-1 -> -2`` and
``K -> -1`` (sigmoid dump, hardmine's convention).

Normaliser: detectron2 divides the batch's summed focal loss by an EMA of max(1, positives in
the batch) (``loss_normalizer``, momentum 0.9, initial 100), which depends on every earlier
step. Each file stores ``loss_normalizer`` (after the step's update) and ``framework_loss`` in
its ``hardmine.capture`` metadata: ``loss_cls = focal loss.total / loss_normalizer`` for a
one-step analysis (``--strategies focal --gamma G --alpha A`` with the model's
``focal_loss_gamma`` / ``focal_loss_alpha``).

detectron2 is not on PyPI: :func:`detectron2_labels` and :func:`detectron2_batch_to_dump` are
framework-free and tested on tensors built with these conventions; :func:`install` imports
detectron2 lazily and was not run against a real detectron2 here (see docs/dumping.md).
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional, Sequence

import numpy as np

from ._common import (Removable, StepPolicy, level_of_stride, levels_from_counts, unwrap_model,
                      writer_for)
from .writer import DumpWriter, _as_numpy

__all__ = ["detectron2_labels", "detectron2_batch_to_dump", "Detectron2Capture", "install"]


def detectron2_labels(gt_labels: Any, num_classes: int) -> np.ndarray:
    """hardmine labels from detectron2 RetinaNet ``gt_labels`` of one image.

    ``-1`` (ignored) becomes ``-2``, ``num_classes`` (background) becomes ``-1``, ``0..K-1``
    stay. Any other value raises ValueError (it is not detectron2's convention).
    """
    lab = _as_numpy(gt_labels, "gt_labels").reshape(-1)
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"gt_labels must be integers, got {lab.dtype}")
    bad = (lab < -1) | (lab > num_classes)
    if bad.any():
        j = int(np.argmax(bad))
        raise ValueError(
            f"gt_labels[{j}] = {int(lab[j])} is outside detectron2's {{-1 (ignored), 0..K-1, "
            f"K={num_classes} (background)}}")
    out = lab.astype(np.int32, copy=True)
    out[lab == -1] = -2
    out[lab == num_classes] = -1
    return out


def detectron2_batch_to_dump(pred_logits: Sequence[Any], gt_labels: Sequence[Any],
                             num_classes: int, first_level: int) -> dict:
    """One batch of detectron2 RetinaNet loss inputs as per-image dump arrays.

    Args:
        pred_logits: per level, ``[N, Hi*Wi*Ai, K]`` (after ``permute_to_N_HWA_K``).
        gt_labels: per image, ``[R]`` with R = sum over levels of Hi*Wi*Ai.
        num_classes: K.
        first_level: the FPN level of ``pred_logits[0]`` (3 for ``p3``).

    Returns:
        ``{"labels": [...], "logits": [...], "levels": [...], "level_counts": [...]}`` with
        one entry per image (numpy arrays).
    """
    if not pred_logits:
        raise ValueError("pred_logits is empty")
    counts = [int(p.shape[1]) for p in pred_logits]
    for k, p in enumerate(pred_logits):
        if p.shape[-1] != num_classes:
            raise ValueError(f"pred_logits[{k}] has {p.shape[-1]} classes, expected {num_classes}")
    total = sum(counts)
    levels = levels_from_counts(counts, first_level)
    labels, logits = [], []
    for i, lab in enumerate(gt_labels):
        lab_np = detectron2_labels(lab, num_classes)
        if lab_np.shape[0] != total:
            raise ValueError(f"image {i}: {lab_np.shape[0]} labels but {total} anchors in pred_logits")
        labels.append(lab_np)
        logits.append(np.concatenate(
            [_as_numpy(p[i], "pred_logits").astype(np.float32, copy=False) for p in pred_logits]))
    return {"labels": labels, "logits": logits, "levels": [levels] * len(labels),
            "level_counts": counts}


def _first_level(model: Any) -> int:
    names = list(getattr(model, "head_in_features", []) or [])
    if names:
        m = re.fullmatch(r"[pP](\d+)", str(names[0]))
        if m:
            return int(m.group(1))
    strides = getattr(getattr(model, "anchor_generator", None), "strides", None)
    if strides:
        return level_of_stride(strides[0])
    raise ValueError("could not tell the FPN level of the first feature map (head_in_features "
                     f"{names!r}, no anchor_generator.strides): pass first_level=")


class Detectron2Capture(Removable):
    """Captures the anchors of a detectron2 RetinaNet training step (see :func:`install`)."""

    def __init__(self, model: Any, writer: DumpWriter, *, every: int = 1,
                 max_steps: Optional[int] = None, start_step: int = 0, boxes: bool = True,
                 first_level: Optional[int] = None) -> None:
        try:
            import detectron2
            from detectron2.modeling.meta_arch.retinanet import RetinaNet
        except ImportError as e:
            raise ImportError(
                "hardmine.capture.detectron2 needs detectron2 (not on PyPI: install it from "
                f"its repository, https://detectron2.readthedocs.io): {e}") from e
        m = unwrap_model(model)
        if not isinstance(m, RetinaNet):
            raise TypeError(
                f"hardmine.capture.detectron2 supports detectron2's RetinaNet; got "
                f"{type(m).__qualname__}. Two-stage models (GeneralizedRCNN) sample proposals, "
                "so their loss never sees most anchors: dump before sampling with DumpWriter.")
        if type(m).losses is not RetinaNet.losses:
            raise TypeError(
                f"{type(m).__qualname__} overrides RetinaNet.losses: its loss is not the one this "
                "adapter reproduces. Write the dump with hardmine.capture.DumpWriter inside your "
                "losses().")
        self.model = m
        self.writer = writer
        writer.activation = "sigmoid"
        self.policy = StepPolicy(every, max_steps, start_step)
        self.boxes = boxes
        self.first_level = _first_level(m) if first_level is None else first_level
        self.analyze_args = ["--strategies", "focal", "--gamma", f"{m.focal_loss_gamma:g}",
                             "--alpha", f"{m.focal_loss_alpha:g}"]
        writer.metadata.update({
            "framework": "detectron2", "framework_version": getattr(detectron2, "__version__", "?"),
            "model": type(m).__qualname__, "analyze_args": self.analyze_args,
            "loss_equals": "focal loss.total / loss_normalizer (metadata), one step per analysis",
        })
        self._orig = m.losses
        m.losses = self._losses

    def _losses(self, anchors: Any, pred_logits: Any, gt_labels: Any, pred_anchor_deltas: Any,
                gt_boxes: Any) -> Any:
        out = self._orig(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        step = self.policy.next()
        if step is not None:
            import torch

            with torch.no_grad():
                d = detectron2_batch_to_dump([p.detach().float().cpu() for p in pred_logits],
                                             [g.cpu() for g in gt_labels],
                                             self.model.num_classes, self.first_level)
                boxes = None
                if self.boxes:
                    b = torch.cat([a.tensor for a in anchors]).detach().float().cpu()
                    boxes = [b] * len(d["labels"])
                extra = {"level_counts": d["level_counts"],
                         "loss_normalizer": float(self.model.loss_normalizer)}
                if "loss_cls" in out:
                    extra["framework_loss"] = float(out["loss_cls"].detach())
                self.writer.write_step(step, d["labels"], d["logits"], levels=d["levels"],
                                       boxes=boxes, extra_metadata=extra)
            self.policy.done()
        return out

    def remove(self) -> None:
        """Take the capture off the model (idempotent)."""
        if self.model.__dict__.get("losses") == self._losses:
            del self.model.losses



def install(model: Any, out_dir: "str | os.PathLike[str] | None" = None, *,
            writer: Optional[DumpWriter] = None, rank: Optional[int] = None, every: int = 1,
            max_steps: Optional[int] = None, start_step: int = 0, boxes: bool = True,
            first_level: Optional[int] = None, overwrite: bool = False) -> Detectron2Capture:
    """Install the capture on a detectron2 RetinaNet (or a DDP wrapping it).

    Arguments as :func:`hardmine.capture.torchvision.install` (no IoU column: ``losses`` does
    not see the ground-truth boxes). The first level is parsed from ``head_in_features``
    (``"p3"`` -> 3), else from the anchor generator's first stride.
    """
    writer = writer_for(out_dir, writer, rank, overwrite)
    return Detectron2Capture(model, writer, every=every, max_steps=max_steps,
                             start_step=start_step, boxes=boxes, first_level=first_level)
