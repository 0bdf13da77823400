"""DumpWriter: writes one training step's anchors as one Parquet file of the dump contract.

The contract is docs/dump-format.md (dense layout): ``image_id`` int64, ``label`` int32,
``logits`` fixed_size_list<float32, C>, and the optional ``anchor_id`` int64, ``level`` int32,
``iou`` float32, ``x1, y1, x2, y2`` float32. The writer adds a ``step`` int64 column (hardmine
ignores columns it does not use).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "DumpWriter",
    "pack_image_id",
    "unpack_image_id",
    "current_rank",
    "ROW_GROUP_SIZE",
    "STEP_BITS",
    "RANK_BITS",
    "INDEX_BITS",
]

#: Rows per Parquet row group (docs/dump-format.md, "Row groups": 64k-1M is a good range).
ROW_GROUP_SIZE = 65_536

#: image_id = step << 32 | rank << 16 | index: 31 bits of step, 16 of rank, 16 of image index.
STEP_BITS = 31
RANK_BITS = 16
INDEX_BITS = 16

_METADATA_KEY = b"hardmine.capture"


def pack_image_id(step: int, rank: int, index: int) -> int:
    """Pack (step, rank, index in the rank's batch) into one non-negative int64 image id.

    ``image_id = step * 2**32 + rank * 2**16 + index`` with ``0 <= step < 2**31``,
    ``0 <= rank < 2**16`` and ``0 <= index < 2**16``. Distinct triples give distinct ids, so
    two ranks (or two steps) never share an id, and the id sorts by step, then rank, then index.

    Raises:
        ValueError: a component is negative or does not fit its bits.
    """
    for name, value, bits in (("step", step, STEP_BITS), ("rank", rank, RANK_BITS),
                              ("index", index, INDEX_BITS)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"image id {name} must be an integer, got {value!r}")
        if value < 0 or value >= (1 << bits):
            raise ValueError(
                f"image id {name} {value} is outside [0, 2**{bits}): image_id packs "
                f"step ({STEP_BITS} bits), rank ({RANK_BITS} bits) and the image's index in "
                f"the rank's batch ({INDEX_BITS} bits)")
    return (int(step) << (RANK_BITS + INDEX_BITS)) | (int(rank) << INDEX_BITS) | int(index)


def unpack_image_id(image_id: int) -> tuple[int, int, int]:
    """Inverse of :func:`pack_image_id`: ``(step, rank, index)`` of a packed image id."""
    image_id = int(image_id)
    if image_id < 0:
        raise ValueError(f"image id {image_id} is negative: not written by DumpWriter")
    return (image_id >> (RANK_BITS + INDEX_BITS),
            (image_id >> INDEX_BITS) & ((1 << RANK_BITS) - 1),
            image_id & ((1 << INDEX_BITS) - 1))


def current_rank() -> int:
    """This process's rank: torch.distributed's when it is initialised, else ``$RANK``, else 0.

    torch is only consulted when the training script has already imported it.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        dist = getattr(torch, "distributed", None)
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    env = os.environ.get("RANK")
    if env is not None and env.strip() != "":
        try:
            return int(env)
        except ValueError:
            raise ValueError(f"$RANK is {env!r}, not an integer; pass rank= to DumpWriter") \
                from None
    return 0


def _as_numpy(x: Any, what: str) -> np.ndarray:
    """A numpy view of a numpy array or a (CPU or GPU) torch tensor, detached."""
    if isinstance(x, np.ndarray):
        return x
    detach = getattr(x, "detach", None)
    if detach is not None:  # a torch tensor
        return detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # pragma: no cover - message only
        raise TypeError(f"{what}: expected a numpy array or torch tensor, got {type(x)}") from e


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class DumpWriter:
    """Writes anchor-level dumps in hardmine's dense layout, one file per (rank, step).

    Args:
        out_dir: output directory; created (with parents) if missing.
        rank: the process rank used in file names and image ids. Default: resolved at the first
            write by :func:`current_rank` (torch.distributed's rank if initialised, else
            ``$RANK``, else 0).
        activation: ``"sigmoid"`` (labels ``0..C-1`` foreground, ``-1`` background, ``-2``
            ignored) or ``"softmax"`` (labels ``0..K-1`` including the background class,
            ``-2`` ignored). Only used to validate labels.
        prefix: file name prefix.
        row_group_size: rows per Parquet row group (default 65,536).
        overwrite: replace existing files of the same name instead of refusing.
        metadata: JSON-serialisable dict stored in every file's Parquet key-value metadata
            under ``hardmine.capture`` (framework, model, the hardmine flags that match the
            loss, ...). hardmine itself ignores it.

    Files are named ``{prefix}-r{rank:05d}-s{step:010d}.parquet`` and written atomically: to a
    hidden temporary file in ``out_dir`` (``.<name>.<pid>.<random>.tmp``, which hardmine
    skips), flushed and fsync'ed, then renamed over the final name with ``os.replace``. A
    failing write removes its temporary file and leaves no partial ``.parquet`` behind.

    Image ids are ``pack_image_id(step, rank, index)`` (see :func:`pack_image_id`), unique
    across steps and ranks. Rows are written image by image (each image's rows contiguous),
    with ``anchor_id`` 0..A-1 within the image.
    """

    def __init__(self, out_dir: "str | os.PathLike[str]", *, rank: Optional[int] = None,
                 activation: str = "sigmoid", prefix: str = "part",
                 row_group_size: int = ROW_GROUP_SIZE, overwrite: bool = False,
                 metadata: Optional[Mapping[str, Any]] = None) -> None:
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")
        if rank is not None and (rank < 0 or rank >= (1 << RANK_BITS)):
            raise ValueError(f"rank {rank} is outside [0, 2**{RANK_BITS})")
        if row_group_size <= 0:
            raise ValueError(f"row_group_size must be positive, got {row_group_size}")
        if not prefix or os.sep in prefix or prefix.startswith((".", "_")):
            raise ValueError(
                f"prefix {prefix!r} must be a plain file name part that does not start with "
                "'.' or '_' (hardmine skips hidden and '_'-prefixed files)")
        self.out_dir = os.fspath(out_dir)
        os.makedirs(self.out_dir, exist_ok=True)
        self._rank = rank
        self.activation = activation
        self.prefix = prefix
        self.row_group_size = int(row_group_size)
        self.overwrite = overwrite
        self.metadata = dict(metadata or {})
        self.num_classes: Optional[int] = None
        self.files: list[str] = []

    @property
    def rank(self) -> int:
        """The rank used in file names and image ids (fixed at the first access)."""
        if self._rank is None:
            self._rank = current_rank()
            if self._rank >= (1 << RANK_BITS):
                raise ValueError(f"rank {self._rank} is outside [0, 2**{RANK_BITS})")
        return self._rank

    def path_for(self, step: int) -> str:
        """The final path of this rank's file for ``step``."""
        return os.path.join(self.out_dir, f"{self.prefix}-r{self.rank:05d}-s{int(step):010d}.parquet")

    def image_id(self, step: int, index: int) -> int:
        """The image id of image ``index`` of this rank's batch at ``step``."""
        return pack_image_id(step, self.rank, index)

    def write_step(self, step: int, labels: Sequence[Any], logits: Sequence[Any], *,
                   levels: Optional[Sequence[Any]] = None, ious: Optional[Sequence[Any]] = None,
                   boxes: Optional[Sequence[Any]] = None,
                   extra_metadata: Optional[Mapping[str, Any]] = None) -> str:
        """Write one step of this rank: one entry per image in each sequence.

        Args:
            step: the training step (``0 <= step < 2**31``).
            labels: per image, an integer array ``[A_i]`` in the writer's label convention.
            logits: per image, a float array ``[A_i, C]`` (written as float32).
            levels: per image, an integer array ``[A_i]`` (FPN level), or None.
            ious: per image, a float array ``[A_i]`` in [0, 1], or None.
            boxes: per image, a float array ``[A_i, 4]`` (x1, y1, x2, y2), or None.
            extra_metadata: merged into this file's ``hardmine.capture`` metadata.

        Returns:
            The path of the written file.

        Raises:
            ValueError: mismatched lengths, a class count different from earlier steps, labels
                outside the convention, or no anchors at all.
            FileExistsError: the file exists already (another run dumped into this directory)
                and ``overwrite`` is False.
        """
        n_img = len(labels)
        if n_img == 0:
            raise ValueError("write_step got no images")
        if len(logits) != n_img:
            raise ValueError(f"write_step got {n_img} label arrays but {len(logits)} logit arrays")
        for name, seq in (("levels", levels), ("ious", ious), ("boxes", boxes)):
            if seq is not None and len(seq) != n_img:
                raise ValueError(f"write_step got {n_img} images but {len(seq)} {name} arrays")
        if n_img > (1 << INDEX_BITS):
            raise ValueError(f"{n_img} images in one step: at most 2**{INDEX_BITS} fit an image id")

        lab_parts, logit_parts, id_parts, aid_parts = [], [], [], []
        lvl_parts, iou_parts, box_parts = [], [], []
        for i in range(n_img):
            lab = _as_numpy(labels[i], "labels").reshape(-1)
            lg = _as_numpy(logits[i], "logits")
            if lg.ndim != 2:
                raise ValueError(f"image {i}: logits must be [anchors, classes], got shape {lg.shape}")
            a, c = lg.shape
            if lab.shape[0] != a:
                raise ValueError(f"image {i}: {lab.shape[0]} labels but {a} rows of logits")
            if c == 0:
                raise ValueError(f"image {i}: logits have 0 classes")
            if self.num_classes is None:
                self.num_classes = int(c)
            elif c != self.num_classes:
                raise ValueError(
                    f"image {i}: {c} classes, but earlier steps of this dump had "
                    f"{self.num_classes}; hardmine needs one class count per dump (use another "
                    "out_dir for another model)")
            if not np.issubdtype(lab.dtype, np.integer):
                raise ValueError(f"image {i}: labels must be integers, got {lab.dtype}")
            self._check_labels(lab, c, i)
            lab_parts.append(lab.astype(np.int32, copy=False))
            logit_parts.append(np.ascontiguousarray(lg, dtype=np.float32).reshape(-1))
            id_parts.append(np.full(a, self.image_id(step, i), dtype=np.int64))
            aid_parts.append(np.arange(a, dtype=np.int64))
            if levels is not None:
                lv = _as_numpy(levels[i], "levels").reshape(-1)
                if lv.shape[0] != a:
                    raise ValueError(f"image {i}: {lv.shape[0]} levels but {a} anchors")
                lvl_parts.append(lv.astype(np.int32, copy=False))
            if ious is not None:
                q = _as_numpy(ious[i], "ious").reshape(-1)
                if q.shape[0] != a:
                    raise ValueError(f"image {i}: {q.shape[0]} IoUs but {a} anchors")
                iou_parts.append(q.astype(np.float32, copy=False))
            if boxes is not None:
                b = _as_numpy(boxes[i], "boxes")
                if b.shape != (a, 4):
                    raise ValueError(f"image {i}: boxes must be [{a}, 4], got {tuple(b.shape)}")
                box_parts.append(b.astype(np.float32, copy=False))

        n = sum(p.shape[0] for p in lab_parts)
        if n == 0:
            raise ValueError("write_step got images without anchors: nothing to dump")
        c = self.num_classes
        cols: dict[str, pa.Array] = {
            "image_id": pa.array(np.concatenate(id_parts), pa.int64()),
            "anchor_id": pa.array(np.concatenate(aid_parts), pa.int64()),
            "step": pa.array(np.full(n, int(step), dtype=np.int64), pa.int64()),
            "label": pa.array(np.concatenate(lab_parts), pa.int32()),
            "logits": pa.FixedSizeListArray.from_arrays(
                pa.array(np.concatenate(logit_parts), pa.float32()), c),
        }
        if levels is not None:
            cols["level"] = pa.array(np.concatenate(lvl_parts), pa.int32())
        if ious is not None:
            cols["iou"] = pa.array(np.concatenate(iou_parts), pa.float32())
        if boxes is not None:
            bx = np.concatenate(box_parts)
            for k, name in enumerate(("x1", "y1", "x2", "y2")):
                cols[name] = pa.array(np.ascontiguousarray(bx[:, k]), pa.float32())
        meta = dict(self.metadata)
        meta.update(extra_metadata or {})
        meta.update({"step": int(step), "rank": self.rank, "activation": self.activation,
                     "image_id_packing": "step << 32 | rank << 16 | index"})
        table = pa.table(cols).replace_schema_metadata(
            {_METADATA_KEY: json.dumps(meta, sort_keys=True, default=str).encode()})
        path = self.path_for(step)
        self._write_atomic(table, path)
        self.files.append(path)
        return path

    def _check_labels(self, lab: np.ndarray, c: int, i: int) -> None:
        if lab.size == 0:
            return
        if self.activation == "sigmoid":
            bad = (lab < -2) | (lab >= c)
            allowed = f"-2 (ignored), -1 (background) or 0..{c - 1}"
        else:
            bad = (lab < -2) | (lab == -1) | (lab >= c)
            allowed = f"-2 (ignored) or 0..{c - 1} (background included)"
        if bad.any():
            j = int(np.argmax(bad))
            raise ValueError(
                f"image {i}, anchor {j}: label {int(lab[j])} is not {allowed} for "
                f"{self.activation} logits with {c} columns")

    def _write_atomic(self, table: pa.Table, path: str) -> None:
        if not self.overwrite and os.path.exists(path):
            raise FileExistsError(
                f"{path} exists already: an earlier run dumped into {self.out_dir}. Use a new "
                "output directory (image ids of two runs would collide), or overwrite=True")
        d, name = os.path.split(path)
        tmp = os.path.join(d, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with open(tmp, "wb") as f:
                # No dictionary for the scores: float logits rarely repeat, so pyarrow would
                # write a dictionary page and then fall back to plain pages anyway; plain pages
                # alone are what hardmine reads fastest (docs/benchmarks.md, "Tenth round").
                dictionary = [n for n in table.column_names if n != "logits"]
                pq.write_table(table, f, row_group_size=self.row_group_size, use_dictionary=dictionary)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(d)
