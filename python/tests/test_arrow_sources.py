"""Arrow stream producers as sources: read in place (no copy, no temporary file), with the
results of the same rows written to Parquet and the errors of the Parquet path, naming the
source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import duckdb  # pinned in requirements-test.txt: a missing package fails, not skips
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hardmine
from hardmine import HardmineError

# Every default strategy (OHEM, SSD and sampling select per image: the partitioned re-read),
# the sweep's grid too.
STRATEGIES = "ce,alpha_ce,focal,ohem,ssd,sampled,ghm"


def canon(report: dict) -> str:
    """The report as the tests compare it: sorted keys, without the command and the inputs."""
    r = json.loads(json.dumps(report))
    for key in ("command", "inputs", "invocation"):
        r["metadata"].pop(key, None)
    return json.dumps(r, sort_keys=True)


def dense_table(images: int, anchors: int, classes: int, seed: int) -> pa.Table:
    """A dense sigmoid dump as numpy makes it: labels -2..C-1, logits ~ N(0, 3)."""
    rng = np.random.default_rng(seed)
    rows = images * anchors
    labels = rng.choice(np.arange(-2, classes), size=rows, p=None).astype(np.int32)
    logits = (3 * rng.standard_normal(rows * classes)).astype(np.float32)
    return pa.table({
        "image_id": np.repeat(np.arange(images, dtype=np.int64), anchors),
        "anchor_id": np.tile(np.arange(anchors, dtype=np.int64), images),
        "label": labels,
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits), classes),
    })


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return dense_table(images=6, anchors=1500, classes=5, seed=7)


@pytest.fixture(scope="module")
def parquet(table, tmp_path_factory):
    path = tmp_path_factory.mktemp("arrow") / "t.parquet"
    pq.write_table(table, path, row_group_size=4000)
    return path


def producers(table: pa.Table, path) -> dict:
    """The same rows from each kind of producer (callables: a stream is read once)."""
    def generated():
        # A reader over a Python generator: its stream calls back into Python for each batch
        # (on the extension's worker thread, which must then take the GIL).
        return pa.RecordBatchReader.from_batches(table.schema, iter(table.to_batches(max_chunksize=999)))

    return {
        "pyarrow.Table": lambda: table,
        "pyarrow.Table (chunked)": lambda: pa.Table.from_batches(table.to_batches(max_chunksize=1234)),
        "pyarrow.RecordBatchReader": lambda: table.to_reader(max_chunksize=1000),
        "pyarrow.RecordBatchReader (generator)": generated,
        "polars.DataFrame": lambda: pl.read_parquet(path),
        "duckdb relation": lambda: duckdb.connect().sql(
            f"select * from read_parquet('{path}') order by image_id, anchor_id"),
    }


KINDS = list(producers(pa.table({"x": [1]}), "").keys())


@pytest.mark.parametrize("kind", KINDS)
def test_each_producer_gives_the_report_of_its_parquet_file(table, parquet, kind):
    want = hardmine.analyze(parquet, strategies=STRATEGIES, threads=2)
    source = producers(table, parquet)[kind]()
    got = hardmine.analyze(source, strategies=STRATEGIES, threads=2)
    name = f"<{type(source).__module__}.{type(source).__qualname__} #0>"
    assert got["metadata"]["inputs"] == [name]
    assert canon(got) == canon(want)


def test_sweep_report_and_mine_take_arrow_sources(table, parquet, tmp_path):
    assert canon(hardmine.sweep(table)) == canon(hardmine.sweep(parquet))
    got = hardmine.report(table, tmp_path / "t.html", gammas=[0, 2])
    assert canon(got) == canon(hardmine.report(parquet, tmp_path / "p.html", gammas=[0, 2]))
    assert "&lt;pyarrow.lib.Table #0&gt;" in (tmp_path / "t.html").read_text()
    a = hardmine.mine(table, "ohem", tmp_path / "a.parquet", ohem_k=16)
    b = hardmine.mine(parquet, "ohem", tmp_path / "b.parquet", ohem_k=16)
    assert (a["rows"], a["images"]) == (b["rows"], b["images"]) == (6 * 16, 6)
    ta, tb = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    assert ta.drop_columns(["file"]).equals(tb.drop_columns(["file"]))
    assert set(ta["file"].to_pylist()) == {"<pyarrow.lib.Table #0>"}


def test_files_and_arrow_sources_mix_in_the_order_given(table, parquet, tmp_path):
    # Images 0-2 from a file, 3-5 from a table: the report of both halves as files.
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(table.slice(0, 4500), first)
    pq.write_table(table.slice(4500), second)
    got = hardmine.analyze([first, table.slice(4500)], strategies=STRATEGIES)
    assert got["metadata"]["inputs"] == [str(first), "<pyarrow.lib.Table #1>"]
    assert canon(got) == canon(hardmine.analyze([first, second], strategies=STRATEGIES))


def test_the_totals_match_an_independent_numpy_computation(table):
    r = hardmine.analyze(table.to_reader(max_chunksize=700), strategies="ce")
    labels = table["label"].to_numpy()
    x = table["logits"].combine_chunks().flatten().to_numpy().reshape(len(labels), -1).astype(np.float64)
    valid = labels != -2
    y = (labels[:, None] == np.arange(x.shape[1])[None, :]).astype(np.float64)
    # Binary cross-entropy from the logit: softplus(x) - y x, stably.
    bce = np.logaddexp(0, x) - y * x
    assert r["dataset"]["decisions"] == valid.sum() * x.shape[1]
    assert r["dataset"]["positives"] == int(y[valid].sum())
    ce = next(s for s in r["strategies"] if s["name"] == "ce")
    total = bce[valid].sum()
    assert abs(ce["loss"]["total"] - total) <= 1e-9 * total


def test_an_unsorted_stream_is_read_twice_from_memory(table, tmp_path, capfd):
    # Images interleaved in 500-row pieces: OHEM/SSD restart in partitioned mode, which reads
    # the source again. A RecordBatchReader cannot be read twice: its batches are kept.
    pieces = [table.slice(i * 500, 500) for i in range(18)]
    shuffled = pa.concat_tables(pieces[0::2] + pieces[1::2])
    path = tmp_path / "unsorted.parquet"
    pq.write_table(shuffled, path)
    want = hardmine.analyze(path, strategies="ce,ohem,ssd", quiet=True)
    got = hardmine.analyze(shuffled.to_reader(max_chunksize=300), strategies="ce,ohem,ssd")
    err = capfd.readouterr().err
    assert "appears again in <pyarrow.lib.RecordBatchReader #0> from row" in err, err
    assert canon(got) == canon(want)


# --- errors: the Parquet path's messages, naming the source -------------------------------------

def error_of(source, **kwargs) -> HardmineError:
    with pytest.raises(HardmineError) as e:
        hardmine.analyze(source, strategies="ce", **kwargs)
    return e.value


def parquet_error(table: pa.Table, path, name: str) -> str:
    """The error for `table` written to Parquet at `path`, the path replaced by `name`."""
    pq.write_table(table, path)
    return str(error_of(path)).replace(str(path), name)


def test_a_missing_or_mistyped_column_is_the_parquet_error_naming_the_source(table, tmp_path):
    renamed = table.rename_columns(["image_id", "anchor_id", "gt_class", "logits"])
    e = error_of(renamed)
    assert str(e).startswith("<pyarrow.lib.Table #0>: missing required column 'label'"), e
    assert str(e) == parquet_error(renamed, tmp_path / "a.parquet", "<pyarrow.lib.Table #0>")
    assert e.fix.startswith("add it to the dump, or map an existing column with --col label=")
    # The rename works as for files.
    r = hardmine.analyze(renamed, columns={"label": "gt_class"}, strategies="ce")
    assert r["strategies"] == hardmine.analyze(table, strategies="ce")["strategies"]

    floats = table.set_column(2, "label", table["label"].cast(pa.float32()))
    frame = pl.from_arrow(floats)
    name = f"<{type(frame).__module__}.{type(frame).__qualname__} #0>"
    e = error_of(frame)
    assert str(e).startswith(f"{name}: column 'label' is float; expected an integer class index"), e
    assert str(e) == parquet_error(floats, tmp_path / "f.parquet", name)
    # A source whose columns differ from an earlier one's.
    strings = pl.from_arrow(table).with_columns(pl.col("image_id").cast(pl.String))
    e = error_of([table, strings])
    assert str(e).startswith(f"{name.replace('#0', '#1')}: column 'image_id' has type Str here but Int in "
                             "<pyarrow.lib.Table #0>"), e


def test_an_invalid_value_is_the_parquet_error_naming_the_source_and_row(table, tmp_path):
    labels = table["label"].to_numpy().copy()
    labels[4321] = 9
    bad = table.set_column(2, "label", pa.array(labels))
    e = error_of(bad.to_reader(max_chunksize=1000))
    assert str(e) == parquet_error(bad, tmp_path / "bad.parquet", "<pyarrow.lib.RecordBatchReader #0>")
    assert str(e).startswith("<pyarrow.lib.RecordBatchReader #0>: column 'label', row 4321: label 9 is "
                             "outside the valid set for 5 classes"), e
    # Skipped and counted instead, as for files.
    r = hardmine.analyze(bad, strategies="ce", on_invalid="skip")
    assert r["dataset"]["skipped"] == {"label_out_of_range": 1}

    logits = table["logits"].combine_chunks().flatten().to_numpy().copy()
    logits[5 * 77 + 3] = np.nan
    nan = table.set_column(3, "logits", pa.FixedSizeListArray.from_arrays(pa.array(logits), 5))
    e = error_of(pl.from_arrow(nan))
    assert "#0>: column 'logits', row 77: non-finite logit NaN at class 3" in str(e), e


def test_a_failing_producer_raises_and_the_interpreter_survives(table):
    def failing():
        yield from table.to_batches(max_chunksize=1000)[:2]
        raise ValueError("the camera feed went away")

    reader = pa.RecordBatchReader.from_batches(table.schema, failing())
    e = error_of(reader)
    assert str(e).startswith("<pyarrow.lib.RecordBatchReader #0>: cannot read the Arrow stream (the "
                             "producer failed: Invalid: the camera feed went away)\n  fix: "), e

    class NotACapsule:
        def __arrow_c_stream__(self, requested_schema=None):
            return 42

    e = error_of(NotACapsule())
    assert "NotACapsule #0>: __arrow_c_stream__() did not return a PyCapsule" in str(e), e
    assert hardmine.analyze(table, strategies="ce")["dataset"]


# --- in place: no copy of the logits ----------------------------------------------------------

PEAK = textwrap.dedent("""
    import json, os, sys
    import numpy as np, pyarrow as pa
    import hardmine

    def peak():  # the process's peak resident set (bytes)
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))

    rows, classes = 1_100_000, 80   # 352 MB of float32 logits
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(rows * classes, dtype=np.float32)
    table = pa.table({
        "image_id": np.repeat(np.arange(rows // 10_000, dtype=np.int64), 10_000),
        "label": rng.integers(-2, classes, rows, dtype=np.int32),
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits), classes),  # numpy's buffer
    })
    source = table if sys.argv[1] == "table" else pa.RecordBatchReader.from_batches(
        table.schema, table.to_batches(max_chunksize=100_000))
    # The extension, its thread pool and allocator warmed up on a slice of the same table.
    hardmine.analyze(table.slice(0, 20_000), strategies="ce,focal", threads=2)
    before = peak()
    r = hardmine.analyze(source, strategies="ce,focal", threads=2)
    print(json.dumps({"before": before, "after": peak(), "logits": logits.nbytes,
                      "decisions": r["dataset"]["decisions"]}))
""")


@pytest.mark.parametrize("kind", ["table", "reader"])
def test_a_large_table_is_analysed_without_copying_its_logits(tmp_path, kind):
    # The peak resident memory of a process that analyses a 352 MB table grows by far less than
    # the logits: a copy (a Parquet spill read back, a concatenation, a conversion) would add
    # them again. TMPDIR stays empty: nothing is written to disk either.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PEAK, kind], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)
    grown = m["after"] - m["before"]
    print(f"{kind}: peak RSS {m['before'] / 2**20:.0f} MiB before the pass, "
          f"{m['after'] / 2**20:.0f} MiB after: +{grown / 2**20:.0f} MiB for "
          f"{m['logits'] / 2**20:.0f} MiB of logits")
    assert m["decisions"] > 50_000_000
    assert grown < m["logits"] / 4, m
    assert list(tmp.iterdir()) == []
