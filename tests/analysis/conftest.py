"""A real experiment folder shared by the analysis tests that read one."""

import shutil
import tempfile

import pytest

from tests.helpers import EXPERIMENTS, raynas


@pytest.fixture(scope="session")
def lookup_experiment(tmp_path_factory):
    """experiments/lookup_tiny.yaml run through the console script: 16 trials on a grid, some
    stopped by ASHA (a few seconds). Tests read it; those that write put their files elsewhere."""
    storage = tmp_path_factory.mktemp("lookup")
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # AF_UNIX paths <= 107 bytes
    try:
        proc = raynas(
            "run", EXPERIMENTS / "lookup_tiny.yaml", "--storage-path", storage, "--quiet", "--num-cpus", "2",
            "--set", "search.searcher=grid", "--set", "search.num_trials=16", "--set", "trainable.params.speedup=1000",
            env={"RAY_TMPDIR": ray_tmp},
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return storage / "lookup_tiny"
