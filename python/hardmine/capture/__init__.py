"""hardmine.capture: dump what a detector's classification loss sees, for hardmine.

``install(model, out_dir)`` puts a capture on a torchvision RetinaNet / FCOS / SSD / SSDlite or
a detectron2 RetinaNet (also inside DistributedDataParallel); mmdetection heads use the
mmengine hook in :mod:`hardmine.capture.mmdet_hook`. Every captured training step writes one
Parquet file per rank in the dump contract of docs/dump-format.md, through :class:`DumpWriter`.

torch, torchvision, detectron2 and mmengine are imported only by the adapters that need them.
"""

from __future__ import annotations

import os
from typing import Any

from ._common import levels_from_counts, unwrap_model
from .detectron2 import detectron2_batch_to_dump, detectron2_labels
from .mmdet import UnsupportedHeadError, check_mmdet_head, mmdet_avg_factor, mmdet_labels
from .writer import DumpWriter, current_rank, pack_image_id, unpack_image_id

__all__ = [
    "install",
    "DumpWriter",
    "pack_image_id",
    "unpack_image_id",
    "current_rank",
    "levels_from_counts",
    "unwrap_model",
    "detectron2_labels",
    "detectron2_batch_to_dump",
    "mmdet_labels",
    "mmdet_avg_factor",
    "check_mmdet_head",
    "UnsupportedHeadError",
]


def install(model: Any, out_dir: "str | os.PathLike[str] | None" = None, **kwargs: Any) -> Any:
    """Install the capture adapter that fits ``model``; return it (``.remove()`` takes it off).

    Dispatches on the model's class (after unwrapping DDP's ``.module``): torchvision
    RetinaNet / FCOS / SSD / SSDlite go to :func:`hardmine.capture.torchvision.install`,
    detectron2's RetinaNet to :func:`hardmine.capture.detectron2.install`; keyword arguments
    are passed on. mmdetection models are refused here: add
    ``hardmine.capture.mmdet_hook.HardmineCaptureHook`` to the config's ``custom_hooks``.

    Raises:
        TypeError: the model is none of these, with what to do instead.
    """
    inner = unwrap_model(model)
    module = type(inner).__module__ or ""
    if module.startswith("torchvision."):
        from . import torchvision as tv
        return tv.install(model, out_dir, **kwargs)
    if module.startswith("detectron2."):
        from . import detectron2 as d2
        return d2.install(model, out_dir, **kwargs)
    if module.startswith("mmdet."):
        raise TypeError(
            "mmdetection models are captured by an mmengine hook: add "
            "custom_imports=dict(imports=['hardmine.capture.mmdet_hook']) and "
            "custom_hooks=[dict(type='HardmineCaptureHook', out_dir='dumps')] to the config")
    raise TypeError(
        f"no capture adapter for {type(inner).__module__}.{type(inner).__qualname__}: supported "
        "are torchvision RetinaNet, FCOS, SSD, SSDlite and detectron2 RetinaNet (mmdetection: "
        "hardmine.capture.mmdet_hook). For another model, write the labels and logits your loss "
        "sees with hardmine.capture.DumpWriter.")
