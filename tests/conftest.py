"""Fixtures shared by the test suite."""

import shutil
import tempfile

import pytest


@pytest.fixture
def ray_env():
    """Environment for a CLI run with its own short Ray temp folder (AF_UNIX paths <= 107 bytes)."""
    path = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield {"RAY_TMPDIR": path}
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_ray():
    """One local Ray (2 CPUs) for a module's runs through the Python API, which joins it."""
    import os

    import ray

    path = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR", _temp_dir=path)
    yield
    ray.shutdown()
    shutil.rmtree(path, ignore_errors=True)
