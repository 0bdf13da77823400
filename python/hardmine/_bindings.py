"""hardmine.analyze / sweep / report / mine / merge: the CLI's commands as Python functions.

Each function turns its keyword arguments into the CLI's argument list (``gamma=1.5`` becomes
``--gamma=1.5``, ``strategies=["ce", "focal"]`` becomes ``--strategies=ce,focal``, ``quiet=True``
becomes ``--quiet``; ``None`` and ``False`` leave the flag out) and hands it to the extension
(``hardmine._native.run``), which parses it with the CLI's own clap definitions and runs the
same library calls in-process. Names, defaults, accepted values and error messages are
therefore the CLI's, by construction (``hardmine analyze --help`` documents every setting).

The pass runs with the GIL released; Ctrl-C (KeyboardInterrupt, also in a notebook) stops it
within a row group and writes no output.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Union

from . import _native
from ._native import HardmineError

# Tracebacks say `hardmine.HardmineError`, where users import it from.
HardmineError.__module__ = "hardmine"

__all__ = ["analyze", "sweep", "report", "mine", "merge", "HardmineError"]

Source = Union[str, "os.PathLike[str]", Any]

# Keyword names that differ from the long option: `columns` is `--col` (repeatable).
_RENAMED = {"columns": "col"}
# Options given once per value instead of as one comma-separated list.
_REPEATED = {"col"}


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # shortest repr that round-trips: the same f64 on the Rust side
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return str(v)


def _flags(kwargs: dict) -> list:
    argv = []
    for key, value in kwargs.items():
        name = _RENAMED.get(key, key).replace("_", "-")
        flag = "--" + name
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif name in _REPEATED:
            items = value.items() if isinstance(value, dict) else None
            values = [f"{k}={v}" for k, v in items] if items is not None else (
                [value] if isinstance(value, str) else list(value))
            argv += [f"{flag}={_value(v)}" for v in values]
        elif isinstance(value, (list, tuple)):
            argv.append(f"{flag}={','.join(_value(v) for v in value)}")
        else:
            # `--flag=value`: a value starting with '-' (alpha=-1) is never read as a flag.
            argv.append(f"{flag}={_value(value)}")
    return argv


class _Sources:
    """The CLI arguments for `source`, and the Arrow stream producers among them.

    A producer's argument is the name it goes by (``<pyarrow.lib.Table #0>``, in
    ``metadata.inputs`` and in errors); the extension takes its C stream by position.
    """

    def __init__(self, source: Any):
        try:
            items = [source] if _is_single(source) else list(source)
        except TypeError:  # not a path and not iterable: the loop says what is accepted
            items = [source]
        self.args = []
        self.arrow = []  # (position among the inputs, producer)
        for i, s in enumerate(items):
            if isinstance(s, (str, os.PathLike)):
                self.args.append(os.fspath(s))
            elif hasattr(s, "__arrow_c_stream__"):
                self.args.append(f"<{type(s).__module__}.{type(s).__qualname__} #{i}>")
                self.arrow.append((i, s))
            else:
                raise HardmineError(
                    f"source {i} is a {type(s).__module__}.{type(s).__qualname__}, not a path or "
                    "an Arrow stream\n  fix: pass a path, a directory, a glob, a list of them, or an "
                    "object with __arrow_c_stream__ (pyarrow Table/RecordBatchReader, polars "
                    "DataFrame, DuckDB relation)")


def _is_single(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) or hasattr(source, "__arrow_c_stream__")


def _run(command: str, sources: "_Sources | None", kwargs: dict) -> dict:
    args, arrow = (sources.args, sources.arrow) if sources is not None else ([], [])
    argv = [command, *_flags(kwargs), "--", *args]
    return json.loads(_native.run(argv, arrow))


def analyze(source: Source, **kwargs: Any) -> dict:
    return _run("analyze", _Sources(source), kwargs)


def sweep(source: Source, **kwargs: Any) -> dict:
    return _run("sweep", _Sources(source), kwargs)


def report(source: Source, out: "str | os.PathLike[str]", **kwargs: Any) -> dict:
    return _run("report", _Sources(source), {"out": out, **kwargs})


def mine(source: Source, strategy: str, out: "str | os.PathLike[str]", **kwargs: Any) -> dict:
    return _run("mine", _Sources(source), {"strategy": strategy, "out": out, **kwargs})


def merge(states: "Union[str, os.PathLike[str], Iterable[Union[str, os.PathLike[str]]]]",
          **kwargs: Any) -> dict:
    items = [states] if isinstance(states, (str, os.PathLike)) else list(states)
    return json.loads(_native.run(["merge", *_flags(kwargs), "--", *(os.fspath(p) for p in items)]))


# --- docstrings: one block per group of CLI flags, shared as the CLI shares them -------------

_SOURCE = """\
    source: a Parquet file, a directory (searched recursively, hive partitions too), a glob,
        or a list of them; or an Arrow stream producer (anything with ``__arrow_c_stream__``:
        pyarrow Table / RecordBatchReader, polars DataFrame, DuckDB relation, ...), read in
        place through the Arrow C stream interface: the logits are not copied. A stream is
        drained when the call starts and its batches are held until it returns (a dump whose
        images are not contiguous is read twice), so a RecordBatchReader larger than memory
        should be written to Parquet and passed as a path. ``metadata.inputs`` and error
        messages name an Arrow source ``<module.Type #i>`` (``i``: its position in ``source``)."""

_DUMP = """\
    Reading the dump (as the CLI's flags of the same name):
    layout: "dense" or "binary" (default: detected from the columns).
    activation: "sigmoid" (default; RetinaNet, FCOS) or "softmax" (SSD, Faster R-CNN).
    background_class: softmax only, index of the background class (default 0).
    scores: "logits" or "probs" when the dump has both.
    columns: {"label": "gt_class", ...} or ["label=gt_class", ...]: column renames (``--col``).
    on_invalid: "error" (default) or "skip" rows with invalid values (counted in the report).
    allow_no_positives: analyse a dump without any positive (default False).
    keep_ignored_images: count all-ignored images with zero loss (default False)."""

_RUN = """\
    threads: worker threads (default: all cores).
    quiet: no notes on stderr (default False)."""

_STRATEGY = """\
    Strategy settings:
    gamma: focal-loss gamma (default 2.0; 0 = CE).
    alpha: class-balance weight in [0, 1]; negative (-1) disables it (default 0.25).
    ohem_k: OHEM candidates kept per image (default 128).
    ohem_nms: OHEM greedy NMS IoU before the top k (needs x1, y1, x2, y2; default none).
    ohem_pos_fraction: OHEM at most floor(F*k) positives (default none).
    neg_pos_ratio: SSD negatives per positive (default 3).
    ssd_empty_images: "no-negatives" (default) or "all-negatives".
    preset: sampling preset, "rpn" (256 @ 0.5) or "rcnn" (512 @ 0.25).
    batch_size_per_image: sampling candidates per image (default 256 or the preset's).
    positive_fraction: sampling share of positives (default 0.5 or the preset's).
    draws: sampling seeded draws for the spread (default 100; 0 = none).
    seed: seed of the draws (default 0).
    ghm_bins: GHM-C gradient-norm bins (default 30).
    ghm_per_level: GHM-C density per FPN level, as mmdetection (needs a level column; default False).
    batch_size: images per training batch for the batch normalisers (default: the dump is one
        batch; each image a batch for the detectron2 EMA).
    qfl_beta: QFL exponent beta (default 2); strategy "qfl".
    vfl_alpha: VFL scale of the negatives' loss (default 0.75); strategy "vfl".
    vfl_gamma: VFL exponent of the negatives' modulating factor (default 2)."""

_SWEEP = """\
    Sweep:
    gammas: gammas to sweep, a list or "0,0.5,1" (default 0, 0.5, 1, 2, 5).
    alphas: alphas to sweep; negative = no alpha weighting (default 0.25, 0.5, 0.75, -1).
    target_easy_share: recommend the smallest gamma whose easy negatives carry less than this
        share of the loss at the balanced alpha, i.e. less than twice this share of the
        negatives' own focal loss (at most 0.5; default 0.1). The alpha recommended with it is
        the focal-loss paper's (Table 1b) for that gamma."""

_OUTPUT = """\
    output: also write the report to this file (atomically), as the CLI's ``--output``.
    format: the format of that file, "table" (default) or "json"."""

_RAISES = """\
    Raises HardmineError (message and ``fix`` line as the CLI prints them) on a bad setting,
    an unknown keyword, a missing or invalid dump; KeyboardInterrupt on Ctrl-C."""

analyze.__doc__ = f"""Compare the strategies bucket by bucket; returns the report as a dict.

    The dict is the JSON of ``hardmine analyze --format json`` (``schema_version``, ``metadata``,
    ``dataset``, ``strategies``, ...; docs/json-schema.md).

{_SOURCE}

    strategies: list or comma-separated string of ce, alpha_ce, focal, ohem, ssd, sampled, ghm,
        and the optional soft-target losses qfl, vfl (default: all but qfl and vfl).
    easy_threshold: a decision is easy when p_t is at least this (default 0.9).
    save_state: also write the accumulator state to this file, for :func:`merge`.
{_RUN}

{_STRATEGY}

{_DUMP}

{_OUTPUT}

{_RAISES}

    Example: ``hardmine.analyze("dump/", strategies=["ce", "focal"], gamma=2, alpha=0.25)``
    """

sweep.__doc__ = f"""Sweep gamma x alpha; returns the report as a dict (``hardmine sweep --format json``).

{_SOURCE}
    easy_threshold: a decision is easy when p_t is at least this (default 0.9).
{_RUN}

{_SWEEP}

{_DUMP}

{_OUTPUT}

{_RAISES}

    Example: ``hardmine.sweep("dump/", gammas=[0, 1, 2], alphas=[0.25, -1])``
    """

report.__doc__ = f"""Write the full report (HTML, or Markdown for a .md ``out``) and return it as a dict.

    The file is what ``hardmine report`` writes; the dict is the report's JSON, with
    ``metadata.invocation`` set to the equivalent ``hardmine report ...`` command line.

{_SOURCE}
    out: the file to write (atomically); Markdown keeps its charts in ``<stem>_files/``.
    format: "html" or "markdown" (default: markdown for a .md file, html otherwise).
    strategies: list or comma-separated string of strategies (default all).
    easy_threshold: a decision is easy when p_t is at least this (default 0.9).
{_RUN}

{_SWEEP}

{_STRATEGY}

{_DUMP}

{_RAISES}

    Example: ``hardmine.report("dump/", "report.html", gammas=[0, 1, 2])``
    """

mine.__doc__ = f"""Export the hard examples a strategy selects to Parquet, as ``hardmine mine``.

    Returns ``{{"rows": int, "images": int, "strategy": str, "out": str}}`` (what the CLI prints
    on stderr).

{_SOURCE}
    strategy: "ohem", "ssd", "sampled" or "focal".
    out: the Parquet file to write (atomically).
    top: at most N rows per image, hardest first (default: all selected; 128 for focal).
{_RUN}

{_STRATEGY}

{_DUMP}

{_RAISES}

    Example: ``hardmine.mine("dump/", "ohem", "hard.parquet", ohem_k=64)``
    """

merge.__doc__ = f"""Merge shard states (``analyze(..., save_state=...)``) into one report dict.

    The dict is the JSON of ``hardmine merge --format json``: the report one run over all the
    shards' inputs gives (shard by image).

    states: a state file or a list of them, in dump order.

{_OUTPUT}

{_RAISES}

    Example: ``hardmine.merge(["s0.state", "s1.state"])``
    """
