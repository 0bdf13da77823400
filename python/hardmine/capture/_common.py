"""Helpers shared by the adapters: unwrapping DDP, FPN levels from per-level counts, step policy."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["unwrap_model", "levels_from_counts", "level_of_stride", "StepPolicy", "Removable", "writer_for"]


def unwrap_model(model: Any) -> Any:
    """The model inside DistributedDataParallel / DataParallel (and mmengine's wrappers).

    Follows ``.module`` while the object is a known wrapper class (``DistributedDataParallel``,
    ``DataParallel``, ``MMDistributedDataParallel``, ``MMFullyShardedDataParallel``,
    ``FullyShardedDataParallel``); any other object is returned as is.
    """
    wrappers = {"DistributedDataParallel", "DataParallel", "MMDistributedDataParallel",
                "MMSeparateDistributedDataParallel", "MMFullyShardedDataParallel",
                "FullyShardedDataParallel"}
    seen = 0
    while type(model).__name__ in wrappers and hasattr(model, "module") and seen < 8:
        model = model.module
        seen += 1
    return model


def level_of_stride(stride: float) -> int:
    """The FPN level of a feature map with this stride: round(log2(stride)) (P3 has stride 8)."""
    if not stride > 0:
        raise ValueError(f"stride {stride} is not positive")
    return int(round(math.log2(stride)))


def levels_from_counts(counts: Sequence[int], first_level: int) -> np.ndarray:
    """Per-anchor levels for anchors concatenated level by level.

    ``counts[k]`` anchors (the head's own H_k x W_k x anchors-per-location) get level
    ``first_level + k``. This is how torchvision, mmdetection and detectron2 order anchors: all
    of level 0's, then level 1's, ...; it is exact where a box-size formula is not (sizes 128
    and 512 at aspect ratios 0.5/2 round to sqrt(area) just below the level boundary).
    """
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts):
        raise ValueError(f"negative anchor count in {counts}")
    return np.repeat(np.arange(first_level, first_level + len(counts), dtype=np.int32), counts)


class StepPolicy:
    """Which loss calls to capture: every ``every``-th call, at most ``max_steps`` of them.

    The step written for a call is the number of loss calls seen before it, plus ``start_step``
    (so with one loss call per iteration it is the iteration number), unless the adapter has a
    step of its own (mmengine's ``runner.iter``).
    """

    def __init__(self, every: int = 1, max_steps: Optional[int] = None, start_step: int = 0):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if max_steps is not None and max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 or None, got {max_steps}")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.every = every
        self.max_steps = max_steps
        self.start_step = start_step
        self.calls = 0
        self.written = 0

    def next(self) -> Optional[int]:
        """Count one loss call; return its step if it is to be captured, else None."""
        call = self.calls
        self.calls += 1
        if call % self.every != 0:
            return None
        if self.max_steps is not None and self.written >= self.max_steps:
            return None
        return self.start_step + call

    def done(self) -> None:
        """Record that a captured step was written."""
        self.written += 1


class Removable:
    """A capture that can be taken off: ``with install(...) as capture:`` removes it at the end."""

    def remove(self) -> None:  # pragma: no cover - every capture defines it
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def writer_for(out_dir: Any, writer: Any, rank: Optional[int], overwrite: bool) -> Any:
    """The adapters' writer: ``writer`` as given, or a new DumpWriter into ``out_dir``.

    Raises:
        ValueError: neither or both were given.
    """
    from .writer import DumpWriter

    if writer is None:
        if out_dir is None:
            raise ValueError("give out_dir (a directory for the dump) or writer=")
        return DumpWriter(out_dir, rank=rank, overwrite=overwrite)
    if out_dir is not None:
        raise ValueError("give either out_dir or writer=, not both")
    return writer
