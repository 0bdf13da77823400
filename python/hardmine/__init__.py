"""hardmine: hard-example mining and sampling analysis of object detectors (Python side).

- :mod:`hardmine.capture` (pure Python): dump what a detector's classification loss sees.
- :func:`analyze`, :func:`sweep`, :func:`report`, :func:`mine`, :func:`merge`: the CLI's
  commands in-process (the Rust extension ``hardmine._native``), with the CLI's settings as
  keyword arguments, returning the CLI's JSON as a dict; errors raise :class:`HardmineError`.
"""

__version__ = "0.1.0"

from . import capture  # noqa: E402
from ._bindings import HardmineError, analyze, merge, mine, report, sweep  # noqa: E402

__all__ = ["capture", "analyze", "sweep", "report", "mine", "merge", "HardmineError",
           "__version__"]
