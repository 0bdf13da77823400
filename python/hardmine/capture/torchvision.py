"""Capture adapter for torchvision's RetinaNet, FCOS, SSD and SSDlite.

Supported: torchvision >= 0.13 (the ``weights=`` API; checked with torchvision 0.29.2 and torch
2.14.1), the stock heads of

- ``RetinaNet`` (``RetinaNetHead``): sigmoid focal loss per image / max(1, foreground of the
  image), averaged over images. Dump: sigmoid, labels 0..C-1 / -1 background / -2 ignored
  (the Matcher's BETWEEN_THRESHOLDS). hardmine: ``analyze DUMP --strategies focal --gamma 2
  --alpha 0.25``; the focal strategy's ``loss.normalized`` is torchvision's ``classification``
  loss of the step.
- ``FCOS`` (``FCOSHead``): the same dump contract (sigmoid focal loss on C logits, no ignored
  anchors), but torchvision normalises the batch's summed focal loss by max(1, foreground in
  the whole batch), not per image: compare ``normalizers`` ``batch_positives`` (one step per
  analysis) with the ``classification`` loss, not the focal ``normalized``. FCOS's centerness
  branch is a separate loss on a separate output and is not dumped: the dump holds what the
  classification loss sees, while FCOS's detection score is sqrt(sigmoid(cls) x
  sigmoid(centerness)).
- ``SSD`` / ``SSDlite`` (``SSDHead`` / ``SSDLiteHead``): softmax over K = num_classes columns
  with background class 0. Dump: softmax, label = matched class, 0 for unmatched anchors.
  hardmine: ``analyze DUMP --activation softmax --background-class 0 --strategies ssd``; the ssd
  strategy's ``extra.torchvision_normalized`` (selected CE / max(1, positives in the batch)) is
  SSD's ``classification`` loss when the dump holds one step.

The hook sits where the classification loss sees the logits and the matcher's ``matched_idxs``
(``RetinaNetHead.compute_loss``, ``FCOSHead.compute_loss``, ``SSD.compute_loss``), so the dump
is exactly what the loss used, with no second matching. FPN levels come from the head's own
per-level output sizes (H x W x anchors per location of each feature map, recorded by forward
hooks on the head's last classification conv of each level), never from box sizes.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from ._common import (Removable, StepPolicy, level_of_stride, levels_from_counts, unwrap_model,
                      writer_for)
from .writer import DumpWriter

__all__ = ["TorchvisionCapture", "install", "torchvision_labels"]

SUPPORTED = "torchvision RetinaNet, FCOS, SSD and SSDlite with their stock heads"


def torchvision_labels(matched_idxs: Any, gt_labels: Any, kind: str) -> Any:
    """Dump labels of one image from torchvision's ``matched_idxs`` (a torch tensor).

    Args:
        matched_idxs: int64 ``[A]``: index of the matched ground-truth box, or the Matcher's
            codes ``-1`` (BELOW_LOW_THRESHOLD) and ``-2`` (BETWEEN_THRESHOLDS).
        gt_labels: int64 ``[G]``: the image's ``targets[i]["labels"]``.
        kind: ``"retinanet"`` (-2 stays ignored, other negatives are background -1, exactly as
            ``RetinaNetClassificationHead.compute_loss`` treats them), ``"fcos"`` (every
            negative is background -1) or ``"ssd"`` (every negative is background class 0).

    Returns:
        int64 tensor ``[A]`` of labels in hardmine's convention.
    """
    import torch

    if kind not in ("retinanet", "fcos", "ssd"):
        raise ValueError(f"kind must be 'retinanet', 'fcos' or 'ssd', got {kind!r}")
    matched = matched_idxs
    fg = matched >= 0
    if gt_labels.numel() == 0:
        if bool(fg.any()):
            raise ValueError("matched_idxs holds a box index but the image has no boxes")
        picked = torch.zeros_like(matched)
    else:
        picked = gt_labels.to(matched.device)[matched.clamp(min=0)]
    if kind == "ssd":
        neg = torch.zeros_like(matched)
    elif kind == "fcos":
        neg = torch.full_like(matched, -1)
    else:
        neg = torch.where(matched == -2, torch.full_like(matched, -2), torch.full_like(matched, -1))
    return torch.where(fg, picked, neg)


def _classify(model: Any) -> tuple[str, Any]:
    """("retinanet" | "fcos" | "ssd", classification head) or a TypeError saying why not."""
    try:
        import torchvision
        from torchvision.models.detection import fcos as tv_fcos
        from torchvision.models.detection import retinanet as tv_retina
        from torchvision.models.detection import ssd as tv_ssd
    except ImportError as e:  # pragma: no cover - torchvision is a test requirement
        raise ImportError(f"hardmine.capture.torchvision needs torchvision: {e}") from e

    def overridden(obj: Any, base: type, name: str) -> Optional[str]:
        fn = getattr(type(obj), name, None)
        if fn is getattr(base, name):
            return None
        return f"{type(obj).__qualname__}.{name}"

    if isinstance(model, tv_retina.RetinaNet):
        head = model.head
        cls_head = getattr(head, "classification_head", None)
        problems = [p for p in (
            overridden(head, tv_retina.RetinaNetHead, "compute_loss")
            if isinstance(head, tv_retina.RetinaNetHead) else f"head {type(head).__qualname__}",
            overridden(cls_head, tv_retina.RetinaNetClassificationHead, "compute_loss")
            if isinstance(cls_head, tv_retina.RetinaNetClassificationHead)
            else f"classification head {type(cls_head).__qualname__}",
            overridden(cls_head, tv_retina.RetinaNetClassificationHead, "forward")
            if isinstance(cls_head, tv_retina.RetinaNetClassificationHead) else None,
        ) if p]
        kind = "retinanet"
    elif isinstance(model, tv_fcos.FCOS):
        head = model.head
        cls_head = getattr(head, "classification_head", None)
        problems = [p for p in (
            overridden(head, tv_fcos.FCOSHead, "compute_loss")
            if isinstance(head, tv_fcos.FCOSHead) else f"head {type(head).__qualname__}",
            overridden(cls_head, tv_fcos.FCOSClassificationHead, "forward")
            if isinstance(cls_head, tv_fcos.FCOSClassificationHead)
            else f"classification head {type(cls_head).__qualname__}",
        ) if p]
        kind = "fcos"
    elif isinstance(model, tv_ssd.SSD):
        cls_head = getattr(model.head, "classification_head", None)
        problems = [p for p in (
            overridden(model, tv_ssd.SSD, "compute_loss"),
            overridden(cls_head, tv_ssd.SSDScoringHead, "forward")
            if isinstance(cls_head, tv_ssd.SSDScoringHead)
            else f"classification head {type(cls_head).__qualname__}",
        ) if p]
        kind = "ssd"
    else:
        raise TypeError(
            f"hardmine.capture.torchvision supports {SUPPORTED}; got {type(model).__qualname__}. "
            "Faster R-CNN's RPN and box head sample anchors/proposals (BalancedPositiveNegative"
            "Sampler), so the loss never sees most of them: dump them yourself with DumpWriter "
            "before sampling and let hardmine's `sampled` strategy model the sampling.")
    if problems:
        raise TypeError(
            f"{type(model).__qualname__} replaces torchvision's loss or head code "
            f"({', '.join(problems)}): the capture hooks the stock code path and could not "
            "guarantee that the dump is what your loss sees. Write the dump yourself with "
            "hardmine.capture.DumpWriter at the point your loss gets logits and labels.")
    return kind, cls_head


class TorchvisionCapture(Removable):
    """Captures the anchors of a torchvision RetinaNet / FCOS / SSD / SSDlite training step.

    Use :func:`install` (or ``hardmine.capture.install``) rather than the constructor. The
    object keeps the hooks; :meth:`remove` takes them off (also on ``with`` exit).

    Attributes:
        kind: ``"retinanet"``, ``"fcos"`` or ``"ssd"``.
        writer: the :class:`DumpWriter`.
        analyze_args: the ``hardmine analyze`` flags that reproduce this model's classification
            loss (also stored in every file's metadata).
        last_level_counts: the per-level anchor counts of the last captured step.
    """

    def __init__(self, model: Any, writer: DumpWriter, *, every: int = 1,
                 max_steps: Optional[int] = None, start_step: int = 0, iou: bool = True,
                 boxes: bool = True, first_level: Optional[int] = None) -> None:
        import torch
        import torchvision

        self.model = unwrap_model(model)
        self.kind, self._cls_head = _classify(self.model)
        self.writer = writer
        self.policy = StepPolicy(every, max_steps, start_step)
        self.iou = iou
        self.boxes = boxes
        self.first_level = first_level
        self.last_level_counts: Optional[list[int]] = None
        self._handles: list[Any] = []
        self._outs: list[tuple[int, int, int]] = []  # per level: (channels, H, W)
        self._image_hw: Optional[tuple[int, int]] = None
        m = self.model
        if self.kind == "ssd":
            self._columns = int(self._cls_head.num_columns)
            convs = list(self._cls_head.module_list)
            writer.activation = "softmax"
            self.analyze_args = ["--activation", "softmax", "--background-class", "0",
                                 "--strategies", "ssd",
                                 "--neg-pos-ratio", f"{m.neg_to_pos_ratio:g}"]
            normalizer = "ssd strategy extra.torchvision_normalized (one step per analysis)"
        else:
            self._columns = int(self._cls_head.num_classes)
            convs = [self._cls_head.cls_logits]
            writer.activation = "sigmoid"
            self.analyze_args = ["--strategies", "focal", "--gamma", "2", "--alpha", "0.25"]
            normalizer = ("focal strategy loss.normalized" if self.kind == "retinanet" else
                          "normalizers batch_positives (one step per analysis)")
        writer.metadata.update({
            "framework": "torchvision", "framework_version": torchvision.__version__,
            "torch_version": torch.__version__, "model": type(m).__qualname__,
            "analyze_args": self.analyze_args, "loss_equals": normalizer,
        })
        # Reset the per-level record at each head call; record each level's classification
        # output shape (N, A*K, H, W) in call order; record the padded batch size for strides.
        self._handles.append(m.head.register_forward_pre_hook(self._reset))
        for conv in convs:
            self._handles.append(conv.register_forward_hook(self._record))
        self._handles.append(m.anchor_generator.register_forward_pre_hook(self._record_images))
        if self.kind == "ssd":
            self._owner, self._orig = m, m.compute_loss
        else:
            self._owner, self._orig = m.head, m.head.compute_loss
        self._owner.compute_loss = self._compute_loss

    # -- hooks ---------------------------------------------------------------------------
    def _reset(self, module: Any, args: Any) -> None:
        self._outs = []

    def _record(self, module: Any, args: Any, out: Any) -> None:
        self._outs.append((int(out.shape[1]), int(out.shape[2]), int(out.shape[3])))

    def _record_images(self, module: Any, args: Any) -> None:
        image_list = args[0]
        self._image_hw = tuple(int(s) for s in image_list.tensors.shape[-2:])

    def _compute_loss(self, targets: Any, head_outputs: Any, anchors: Any, matched_idxs: Any) -> Any:
        losses = self._orig(targets, head_outputs, anchors, matched_idxs)
        step = self.policy.next()
        if step is not None:
            self._dump(step, targets, head_outputs, anchors, matched_idxs, losses)
            self.policy.done()
        return losses

    # -- the dump ------------------------------------------------------------------------
    def level_counts(self, total: int) -> list[int]:
        """Per-level anchor counts of the last head call: (channels / K) x H x W per level."""
        counts = []
        for k, (ch, h, w) in enumerate(self._outs):
            if ch % self._columns:
                raise RuntimeError(
                    f"level {k}: the classification output has {ch} channels, not a multiple "
                    f"of the {self._columns} classes")
            counts.append(ch // self._columns * h * w)
        if sum(counts) != total:
            raise RuntimeError(
                f"the head's per-level outputs {self._outs} give {sum(counts)} anchors but the "
                f"loss sees {total}: the head was called more than once per step, or not at all "
                "through the hooked module")
        return counts

    def _levels(self, counts: list[int]) -> np.ndarray:
        first = self.first_level
        if first is None:
            if self._image_hw is None or not self._outs:
                raise RuntimeError("no feature-map sizes were recorded for this step")
            first = level_of_stride(self._image_hw[0] // self._outs[0][1])
        return levels_from_counts(counts, first)

    def _dump(self, step: int, targets: Any, head_outputs: Any, anchors: Any,
              matched_idxs: Any, losses: Any) -> None:
        import torch
        from torchvision.ops import box_iou

        with torch.no_grad():
            cls_logits = head_outputs["cls_logits"]
            total = int(cls_logits.shape[1])
            counts = self.level_counts(total)
            levels = self._levels(counts)
            labels, logits, ious, boxes = [], [], [], []
            for i, (t, a, mi) in enumerate(zip(targets, anchors, matched_idxs)):
                if a.shape[0] != total or mi.shape[0] != total:
                    raise RuntimeError(
                        f"image {i}: {a.shape[0]} anchors and {mi.shape[0]} matches but "
                        f"{total} logits per image")
                labels.append(torchvision_labels(mi, t["labels"], self.kind).cpu())
                logits.append(cls_logits[i].detach().float().cpu())
                if self.iou:
                    if t["boxes"].numel() == 0:
                        ious.append(torch.zeros(total))
                    else:
                        q = box_iou(t["boxes"].detach().float(), a.detach().float())
                        ious.append(q.max(dim=0).values.clamp(0, 1).cpu())
                if self.boxes:
                    boxes.append(a.detach().float().cpu())
            self.last_level_counts = counts
            extra = {"level_counts": counts}
            if "classification" in losses:
                extra["framework_loss"] = float(losses["classification"].detach())
            self.writer.write_step(
                step, labels, logits, levels=[levels] * len(labels),
                ious=ious if self.iou else None, boxes=boxes if self.boxes else None,
                extra_metadata=extra)

    # -- lifetime ------------------------------------------------------------------------
    def remove(self) -> None:
        """Take the hooks off the model (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._owner is not None and self._owner.__dict__.get("compute_loss") == self._compute_loss:
            del self._owner.compute_loss
        self._owner = None



def install(model: Any, out_dir: "str | os.PathLike[str] | None" = None, *,
            writer: Optional[DumpWriter] = None, rank: Optional[int] = None, every: int = 1,
            max_steps: Optional[int] = None, start_step: int = 0, iou: bool = True,
            boxes: bool = True, first_level: Optional[int] = None,
            overwrite: bool = False) -> TorchvisionCapture:
    """Install the capture on a torchvision RetinaNet, FCOS, SSD or SSDlite (or DDP of one).

    Args:
        model: the model, or a DistributedDataParallel / DataParallel wrapping it.
        out_dir: output directory (created). Each captured step writes one file per rank.
        writer: a :class:`DumpWriter` to use instead of ``out_dir``.
        rank: override the rank (default: torch.distributed's, else ``$RANK``, else 0).
        every: capture every ``every``-th loss call.
        max_steps: stop after this many captured steps (None: no limit).
        start_step: the step number of the first loss call (e.g. when resuming).
        iou: also write each anchor's max IoU with the image's boxes (one extra box_iou).
        boxes: also write the anchor boxes (x1, y1, x2, y2, in the transformed image).
        first_level: the FPN level of the first feature map. Default: round(log2(stride)) of
            the first map (3 for torchvision's ResNet-FPN P3); the others follow consecutively.
        overwrite: replace existing files instead of refusing.

    Returns:
        A :class:`TorchvisionCapture`; call ``.remove()`` to take it off.
    """
    writer = writer_for(out_dir, writer, rank, overwrite)
    return TorchvisionCapture(model, writer, every=every, max_steps=max_steps,
                              start_step=start_step, iou=iou, boxes=boxes,
                              first_level=first_level)
