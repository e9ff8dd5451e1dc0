"""Makes the experiment's own modules importable in the workers of a local Ray raynas starts.

A cluster gets the files next to the experiment file shipped as ``runtime_env`` ``py_modules``.
A local Ray's workers run on this machine and can import them where they are, so the runner
leaves its job without a runtime environment (which would keep the trial actors off the
workers Ray prestarts) and names the folders in ``RAYNAS_WORKER_PATH`` instead; Ray imports
this module in each worker as it starts (``preload_python_modules``), before the worker
unpickles a trial's arguments, which may hold objects of those modules.
"""

from __future__ import annotations

import os

from raynas._imports import WORKER_PATH_ENV, add_search_path

for _folder in reversed([p for p in os.environ.get(WORKER_PATH_ENV, "").split(os.pathsep) if p]):
    add_search_path(_folder)
