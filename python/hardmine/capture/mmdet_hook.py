"""mmengine ``Hook`` that installs :class:`hardmine.capture.mmdet.MMDetHeadCapture`.

Importing this module imports mmengine and registers ``HardmineCaptureHook`` in mmengine's
HOOKS registry (mmdetection's registry falls back to it). In an mmdetection 3.x config::

    custom_imports = dict(imports=["hardmine.capture.mmdet_hook"], allow_failed_imports=False)
    custom_hooks = [dict(type="HardmineCaptureHook", out_dir="dumps", max_steps=50)]

Before training the hook finds ``runner.model`` (through ``.module`` under DDP), checks its
``bbox_head`` (see :func:`hardmine.capture.mmdet.check_mmdet_head`: RetinaHead / SSDHead with
PseudoSampler; ATSSHead, RPNHead and real samplers are refused with the reason) and wraps its
loss methods; each captured iteration writes one file per rank named with ``runner.rank`` and
``runner.iter``. After training the head's methods are restored.

Not run against a real mmengine in hardmine's tests (mmdetection needs compiled mmcv ops):
the head wrapping it installs is tested on heads built with mmdetection's conventions.
"""

from __future__ import annotations

from typing import Any, Optional

try:
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "hardmine.capture.mmdet_hook needs mmengine (pip install mmengine; mmdetection 3.x "
        f"installs it): {e}") from e

from ._common import unwrap_model
from .mmdet import MMDetHeadCapture, UnsupportedHeadError
from .writer import DumpWriter

__all__ = ["HardmineCaptureHook"]


@HOOKS.register_module()
class HardmineCaptureHook(Hook):
    """Dumps the anchors the classification loss sees, for hardmine (see the module doc).

    Args:
        out_dir: dump directory (created); one file per rank and captured iteration.
        every: capture every ``every``-th iteration.
        max_steps: stop after this many captured iterations (None: no limit).
        boxes: also write the anchor boxes.
        first_level: FPN level of the head's first feature map (default: from its strides).
        overwrite: replace existing files instead of refusing.
    """

    priority = "NORMAL"

    def __init__(self, out_dir: str, every: int = 1, max_steps: Optional[int] = None,
                 boxes: bool = True, first_level: Optional[int] = None,
                 overwrite: bool = False) -> None:
        self.out_dir = out_dir
        self.every = every
        self.max_steps = max_steps
        self.boxes = boxes
        self.first_level = first_level
        self.overwrite = overwrite
        self.capture: Optional[MMDetHeadCapture] = None

    def before_train(self, runner: Any) -> None:
        """Check the model's bbox_head and wrap its loss methods."""
        model = unwrap_model(runner.model)
        head = getattr(model, "bbox_head", None)
        if head is None:
            raise UnsupportedHeadError(
                f"{type(model).__name__} has no bbox_head: HardmineCaptureHook supports "
                "single-stage detectors with a RetinaHead or SSDHead")
        writer = DumpWriter(self.out_dir, rank=int(getattr(runner, "rank", 0)),
                            overwrite=self.overwrite)
        self.capture = MMDetHeadCapture(head, writer, every=1, max_steps=None,
                                        boxes=self.boxes, first_level=self.first_level)
        self._written = 0

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        """Decide whether this iteration is captured and give it ``runner.iter`` as its step."""
        if self.capture is None:
            return
        it = int(runner.iter)
        on = it % self.every == 0 and (self.max_steps is None or self._written < self.max_steps)
        self.capture.step = it
        self.capture.enabled = on
        if on:
            self._written += 1

    def after_train(self, runner: Any) -> None:
        """Restore the head's methods."""
        if self.capture is not None:
            self.capture.remove()
            self.capture = None
