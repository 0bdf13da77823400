"""examples/ray_shards.py: one shard per Ray task (local Ray), merged = one run over all files."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

import hardmine

ray = pytest.importorskip("ray")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ray_shards.py"


def load_example():
    # Not registered in sys.modules: Ray (cloudpickle) then ships the task function by value.
    spec = importlib.util.spec_from_file_location("ray_shards", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ray_shards_merge_equals_one_run(tmp_path, hardmine_bin, monkeypatch):
    # Ray puts the driver's working directory first on its workers' sys.path: from python/
    # they would import the sources (without the compiled extension), not the installed package.
    monkeypatch.chdir(tmp_path)
    dump = tmp_path / "dump"
    subprocess.run([hardmine_bin, "generate", "--out", str(dump), "--images", "6",
                    "--anchors-per-image", "3000", "--classes", "4", "--seed", "5",
                    "--images-per-file", "2"], check=True, capture_output=True)
    example = load_example()
    shards = example.shards_of(str(dump))
    assert len(shards) == 3
    settings = dict(strategies="ce,alpha_ce,focal,ohem,ssd,sampled,ghm", gamma=2.0, alpha=0.25)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        merged = example.run(shards, str(tmp_path / "states"), **settings)
    finally:
        ray.shutdown()
    whole = hardmine.analyze(dump, threads=1, **settings)
    assert merged["metadata"]["command"] == "merge"
    # Counts exact and sums to the last bit (exact fixed-point sums across blocks), so the
    # whole report is identical apart from the command that made it.
    merged["metadata"]["command"] = whole["metadata"]["command"]
    assert json.dumps(merged, sort_keys=True) == json.dumps(whole, sort_keys=True)
