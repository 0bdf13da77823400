"""Shared fixtures: the hardmine binary, one torch thread, small synthetic batches."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

# `hardmine` is the installed package (python/ci.sh installs ./python into the venv): the
# sources in python/hardmine lack the compiled extension hardmine._native.

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the writer tests run without torch
    torch = None


def _binary() -> str:
    env = os.environ.get("HARDMINE_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/hardmine-target"))
    return os.path.join(target, "release", "hardmine")


@pytest.fixture(scope="session")
def hardmine_bin() -> str:
    path = _binary()
    if not os.access(path, os.X_OK):
        pytest.fail(f"hardmine binary not found at {path}: build it with `cargo build --release` "
                    "and set HARDMINE_BIN (python/ci.sh does both)")
    return path


@pytest.fixture
def analyze(hardmine_bin):
    """Run `hardmine analyze DUMP ARGS --format json -q` and return the parsed JSON."""

    def run(dump, *args):
        cmd = [hardmine_bin, "analyze", str(dump), *map(str, args), "--format", "json", "-q",
               "--threads", "1"]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
        return json.loads(out.stdout)

    return run


def rel(a: float, b: float) -> float:
    """Relative difference of a against the reference b."""
    return abs(a - b) / max(abs(b), 1e-30)
