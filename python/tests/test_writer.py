"""DumpWriter: the dump contract's columns and types, atomic files, rank-aware names and ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hardmine.capture import writer as writer_mod
from hardmine.capture.writer import DumpWriter, pack_image_id, unpack_image_id


def _step(rng, n_img=2, anchors=(700, 300), classes=3):
    labels = [rng.integers(-2, classes, a) for a in anchors[:n_img]]
    logits = [rng.normal(size=(a, classes)).astype(np.float32) for a in anchors[:n_img]]
    return labels, logits


def test_columns_types_and_row_groups(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "new" / "nested"  # created by the writer
    w = DumpWriter(out, rank=0, row_group_size=256)
    labels, logits = _step(rng)
    levels = [np.full(700, 3), np.full(300, 4)]
    ious = [rng.uniform(size=700), rng.uniform(size=300)]
    boxes = [rng.uniform(size=(700, 4)), rng.uniform(size=(300, 4))]
    path = w.write_step(7, labels, logits, levels=levels, ious=ious, boxes=boxes)
    assert os.path.dirname(path) == str(out)
    f = pq.ParquetFile(path)
    schema = f.schema_arrow
    assert schema.field("image_id").type == pa.int64()
    assert schema.field("anchor_id").type == pa.int64()
    assert schema.field("step").type == pa.int64()
    assert schema.field("label").type == pa.int32()
    assert schema.field("logits").type == pa.list_(pa.float32(), 3)  # fixed_size_list<float32, 3>
    assert schema.field("level").type == pa.int32()
    for name in ("iou", "x1", "y1", "x2", "y2"):
        assert schema.field(name).type == pa.float32()
    assert f.metadata.num_row_groups == 4  # 1000 rows in groups of 256
    t = f.read()
    np.testing.assert_array_equal(t["label"].to_numpy(), np.concatenate(labels))
    got = np.asarray(t["logits"].combine_chunks().flatten()).reshape(-1, 3)
    np.testing.assert_array_equal(got, np.concatenate(logits))
    ids = t["image_id"].to_numpy()
    assert set(ids[:700]) == {pack_image_id(7, 0, 0)} and set(ids[700:]) == {pack_image_id(7, 0, 1)}
    np.testing.assert_array_equal(t["anchor_id"].to_numpy()[:700], np.arange(700))
    assert set(t["step"].to_numpy()) == {7}
    meta = json.loads(f.schema_arrow.metadata[b"hardmine.capture"])
    assert meta["step"] == 7 and meta["rank"] == 0
    # The scores are written without a dictionary (plain pages: hardmine's fastest read), the
    # other columns with pyarrow's default.
    chunks = {f.metadata.row_group(0).column(i).path_in_schema: f.metadata.row_group(0).column(i)
              for i in range(f.metadata.num_columns)}
    assert not chunks["logits.list.element"].has_dictionary_page
    assert set(chunks["logits.list.element"].encodings) <= {"PLAIN", "RLE"}
    assert chunks["image_id"].has_dictionary_page


def test_default_row_group_size_is_65536(tmp_path):
    rng = np.random.default_rng(1)
    w = DumpWriter(tmp_path, rank=0)
    labels = [rng.integers(-1, 2, 70_000)]
    logits = [rng.normal(size=(70_000, 2))]
    f = pq.ParquetFile(w.write_step(0, labels, logits))
    assert [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)] == [65_536, 4_464]


def test_image_id_packing():
    assert pack_image_id(0, 0, 0) == 0
    assert pack_image_id(1, 0, 0) == 1 << 32
    assert pack_image_id(0, 1, 0) == 1 << 16
    for t in [(0, 0, 5), (3, 7, 65_535), (2**31 - 1, 65_535, 65_535)]:
        assert unpack_image_id(pack_image_id(*t)) == t
    assert pack_image_id(2**31 - 1, 65_535, 65_535) < 2**63
    with pytest.raises(ValueError, match="rank 65536"):
        pack_image_id(0, 65_536, 0)
    with pytest.raises(ValueError, match="index -1"):
        pack_image_id(0, 0, -1)


def test_two_ranks_never_collide(tmp_path, analyze):
    """Two simulated ranks writing the same steps to one directory: distinct files and ids."""
    rng = np.random.default_rng(2)
    writers = [DumpWriter(tmp_path, rank=r) for r in (0, 1)]
    for step in (0, 1):
        for w in writers:
            w.write_step(step, *_step(rng))
    files = sorted(p for p in os.listdir(tmp_path))
    assert files == ["part-r00000-s0000000000.parquet", "part-r00000-s0000000001.parquet",
                     "part-r00001-s0000000000.parquet", "part-r00001-s0000000001.parquet"]
    ids = [set(pq.read_table(tmp_path / f, columns=["image_id"])["image_id"].to_numpy())
           for f in files]
    assert sum(len(s) for s in ids) == len(set().union(*ids)) == 8
    j = analyze(tmp_path, "--strategies", "focal")
    assert j["dataset"]["images"] == 8 and j["dataset"]["files"] == 4


def test_rank_from_torch_distributed(tmp_path, analyze):
    """Two real processes in a gloo group: each writer takes its rank from torch.distributed."""
    torch = pytest.importorskip("torch")
    del torch
    script = textwrap.dedent(f"""
        import sys, numpy as np, torch, torch.distributed as dist
        from hardmine.capture import DumpWriter
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method="file://{tmp_path}/rendezvous",
                                rank=rank, world_size=2)
        w = DumpWriter("{tmp_path}/dump")  # no rank given
        rng = np.random.default_rng(rank)
        w.write_step(0, [rng.integers(-1, 2, 100)] * 2, [rng.normal(size=(100, 2))] * 2)
        dist.barrier()
        dist.destroy_process_group()
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r)], env=env) for r in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert sorted(os.listdir(tmp_path / "dump")) == ["part-r00000-s0000000000.parquet",
                                                     "part-r00001-s0000000000.parquet"]
    ids = pq.read_table(tmp_path / "dump")["image_id"].to_numpy()
    assert sorted(set(ids)) == [pack_image_id(0, 0, 0), pack_image_id(0, 0, 1),
                                pack_image_id(0, 1, 0), pack_image_id(0, 1, 1)]
    assert analyze(tmp_path / "dump", "--strategies", "focal")["dataset"]["images"] == 4


def test_rank_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    w = DumpWriter(tmp_path)
    p = w.write_step(0, [np.array([0, -1])], [np.zeros((2, 1))])
    assert os.path.basename(p) == "part-r00003-s0000000000.parquet"


def test_failing_write_leaves_no_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    w = DumpWriter(tmp_path, rank=0)
    real = pq.write_table

    def half_then_fail(table, where, **kw):
        where.write(b"PAR1 partial bytes")  # something reached the temporary file
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(writer_mod.pq, "write_table", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        w.write_step(0, *_step(rng))
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(writer_mod.pq, "write_table", real)
    w.write_step(0, *_step(rng))
    assert os.listdir(tmp_path) == ["part-r00000-s0000000000.parquet"]  # no temp file left


def test_interrupted_rename_leaves_no_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    w = DumpWriter(tmp_path, rank=0)

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer_mod.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        w.write_step(0, *_step(rng))
    assert os.listdir(tmp_path) == []


def test_refuses_existing_file(tmp_path):
    rng = np.random.default_rng(5)
    DumpWriter(tmp_path, rank=0).write_step(0, *_step(rng))
    with pytest.raises(FileExistsError, match="new output directory"):
        DumpWriter(tmp_path, rank=0).write_step(0, *_step(rng))
    DumpWriter(tmp_path, rank=0, overwrite=True).write_step(0, *_step(rng))


def test_label_and_shape_checks(tmp_path):
    w = DumpWriter(tmp_path, rank=0)
    with pytest.raises(ValueError, match="label 3 is not"):
        w.write_step(0, [np.array([0, 3])], [np.zeros((2, 3))])
    with pytest.raises(ValueError, match="label -3"):
        w.write_step(0, [np.array([-3, 0])], [np.zeros((2, 3))])
    with pytest.raises(ValueError, match="2 labels but 3 rows"):
        w.write_step(0, [np.array([0, 1])], [np.zeros((3, 3))])
    w.write_step(0, [np.array([0, -1])], [np.zeros((2, 3))])
    with pytest.raises(ValueError, match="4 classes, but earlier steps"):
        w.write_step(1, [np.array([0, -1])], [np.zeros((2, 4))])
    s = DumpWriter(tmp_path / "softmax", rank=0, activation="softmax")
    with pytest.raises(ValueError, match="label -1 is not -2"):
        s.write_step(0, [np.array([0, -1])], [np.zeros((2, 3))])
    assert os.listdir(tmp_path / "softmax") == []


def test_import_without_torch(tmp_path):
    """`import hardmine.capture` and the writer work where torch is not importable."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        import hardmine
        from hardmine.capture import DumpWriter
        DumpWriter({str(tmp_path)!r}, rank=0).write_step(0, [np.array([0, -1])], [np.zeros((2, 1))])
        print(hardmine.__version__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_a_capture_used_as_a_context_manager_is_removed_at_the_end():
    from hardmine.capture._common import Removable

    class Capture(Removable):
        removed = 0

        def remove(self):
            self.removed += 1

    with Capture() as c:
        assert c.removed == 0
    assert c.removed == 1
