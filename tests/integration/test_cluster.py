"""A multi-node Ray cluster on loopback (ray.cluster_utils.Cluster): `raynas run --address`."""

import os
import shutil
import tempfile
import textwrap

import pytest

from raynas.experiment import read_journal

from tests.helpers import raynas, write_yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.cluster]

MODULE = """
import os

import numpy as np

LOG = {log!r}
CALLS = {calls!r}


def tiny(arch, input_shape, num_classes):
    import ray
    import torch.nn as nn

    # Where this trial ran, and which copy of this file it imported.
    with open(LOG, "a") as f:
        f.write(f"{{ray.get_runtime_context().get_node_id()}} {{os.path.abspath(__file__)}}\\n")
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(arch["hidden"]), nn.ReLU(), nn.Linear(arch["hidden"], num_classes))


def blobs(n=240):
    with open(CALLS, "a") as f:
        f.write("call\\n")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    return rng.normal(size=(n, 4)).astype("float32") + y[:, None] * 3.0, y
"""


@pytest.fixture
def cluster(monkeypatch):
    """A head and a worker node, 1 CPU each, started (and shut down) by this test only."""
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    # Every process of the cluster and the driver must agree on authentication.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        c.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def test_run_on_a_two_node_cluster_ships_user_modules(cluster, tmp_path):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    log, calls = tmp_path / "where.log", tmp_path / "calls.log"
    (exp_dir / "cl_models.py").write_text(textwrap.dedent(MODULE.format(log=str(log), calls=str(calls))))
    exp = write_yaml(
        exp_dir / "cluster.yaml",
        {
            "name": "cl",
            "data": {"source": "cl_models:blobs"},
            "model": "cl_models:tiny",
            "space": {"arch": {"hidden": {"choice": [4, 8, 16, 32]}}, "train": {"lr": 0.05}},
            "search": {"searcher": "grid"},
            "max_epochs": 2,
        },
    )
    proc = raynas(
        "run", exp, "--address", cluster.address, "--storage-path", tmp_path / "res",
        env={"RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": os.environ["RAY_TMPDIR"]},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    journal = read_journal(tmp_path / "res" / "cl")
    assert len(journal) == 4 and all(r.status.value == "completed" for r in journal.values())

    lines = [line.split(" ", 1) for line in log.read_text().splitlines()]
    nodes = {node for node, _ in lines}
    files = {path for _, path in lines}
    assert len(nodes) == 2, "trials should run on both nodes"
    # Workers imported the copy shipped with the job, not the file beside the experiment.
    assert str(exp_dir / "cl_models.py") not in files, files
    # The data was loaded once, by the driver, and reached the other node through the object store.
    assert calls.read_text().count("call") == 1


def test_a_data_parallel_supernet_spreads_its_workers_over_the_nodes(cluster, tmp_path):
    """``workers_per_trial: 2`` of 0.99 CPU on two nodes of 1 CPU: Ray Train must place one
    worker on each, and they train the supernet in step."""
    from raynas.analysis import load_results

    ops = ["skip", "conv1x1", "conv3x3"]
    exp = write_yaml(tmp_path / "dp.yaml", {
        "name": "dp", "data": {"source": "digits", "seed": 0}, "model": "cell",
        "space": {"arch": {"edges": {e: {"choice": ops} for e in ("0-1", "0-2", "1-2")}, "nodes": 3, "channels": 8,
                           "stages": 2, "cells_per_stage": 1},
                  "train": {"lr": 0.003, "batch_size": 64}},
        "search": {"strategy": "one-shot", "num_trials": 2, "seed": 0, "population_size": 2, "sample_size": 2,
                   "one_shot": {"supernet_epochs": 3}},
        "resources": {"cpus_per_trial": 0.99, "workers_per_trial": 2},
        "max_epochs": 2,
    })
    proc = raynas("run", exp, "--address", cluster.address, "--storage-path", tmp_path / "res", "--quiet",
                  env={"RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": os.environ["RAY_TMPDIR"]})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = load_results(tmp_path / "res" / "dp" / "supernet").trials[0].curve
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {(r["workers"], r["worker_nodes"], r["worker_weight_spread"]) for r in rows} == {(2, 2, 0.0)}
    scored = load_results(tmp_path / "res" / "dp").trials
    assert len(scored) == 2 and all(t.best is not None for t in scored)
