"""Benchmark trainables that go through the same Ray Tune path as real trials.

- :func:`lcbench`: LCBench via the YAHPO Gym ONNX surrogate (needs ``raynas[bench]``).
- :func:`lookup`: any tabular benchmark, a JSON or CSV table from architecture key to metrics.

Both replay per-epoch metrics in simulated time (sleeping ``simulated seconds / speedup``)
and report ``sim_time`` so curves are comparable across speed-ups. In an experiment file::

    trainable:
      function: raynas.bench:lcbench
      params: {task: "3945", speedup: 100}

onnxruntime is imported only when a surrogate is first used.
"""

from __future__ import annotations

from raynas.bench.lcbench import LCBENCH_DEFAULT, LCBENCH_SPACE, LCBenchSurrogate, lcbench
from raynas.bench.lookup import LookupTable, TableError, lookup

__all__ = ["LCBENCH_DEFAULT", "LCBENCH_SPACE", "LCBenchSurrogate", "LookupTable", "TableError", "lcbench", "lookup"]
