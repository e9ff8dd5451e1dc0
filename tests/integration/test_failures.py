"""Trial errors fail one trial and the search goes on; user modules next to the YAML work."""

import json
import textwrap

import pytest

from raynas.experiment import read_journal, read_results

from tests.helpers import raynas, write_yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]


POISON = """
import torch.nn as nn

from raynas.trainables.families import build_cnn


class Poison(nn.Module):
    def forward(self, x):
        return x * float("nan")


def build(arch, input_shape, num_classes):
    arch = dict(arch)
    poison = arch.pop("poison")
    net = build_cnn(arch, input_shape, num_classes)
    return nn.Sequential(net, Poison()) if poison else net
"""


def test_nan_loss_and_unfit_arch_fail_alone(tmp_path, ray_env):
    # A grid over {2, 3 or 4 stride-2 stages} x {poisoned or not} on 8x8 digits: 4 stages
    # cannot fit 8x8 (an arch error before training); a poisoned net's loss is NaN.
    (tmp_path / "poisoned.py").write_text(POISON)
    exp = write_yaml(
        tmp_path / "fail.yaml",
        {
            "name": "fail",
            "model": "poisoned:build",
            "space": {
                "arch": {
                    "stages": {"repeat": {"min": 2, "max": 4}, "block": {"channels": 8, "kernel": 3, "stride": 2}},
                    "poison": {"choice": [False, True]},
                },
                "train": {"lr": 0.05, "optimizer": "sgd", "batch_size": 64},
            },
            "search": {"searcher": "grid", "max_concurrent": 1},
            "max_epochs": 2,
        },
    )
    proc = raynas("run", exp, "--storage-path", tmp_path / "res", env=ray_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp_dir = tmp_path / "res" / "fail"
    journal = read_journal(exp_dir)
    assert len(journal) == 6
    by_case = {(len(r.config["arch"]["stages"]), r.config["arch"]["poison"]): r for r in journal.values()}

    for stages in (2, 3):
        ok = by_case[(stages, False)]
        assert ok.status.value == "completed" and ok.epochs == 2 and ok.best is not None
        nan = by_case[(stages, True)]
        assert nan.status.value == "failed", nan
        assert "training loss became nan in epoch 1" in nan.error

    for poison in (False, True):
        unfit = by_case[(4, poison)]
        assert unfit.status.value == "failed"
        assert "arch.stages.3" in unfit.error and "downsampling" in unfit.error
        assert read_results(exp_dir / unfit.dir)[-1].get("epoch") is None  # no epoch was trained

    # One lane: every trial ran in the same worker process, failures included (no restart).
    pids = {json.loads(line)["pid"] for r in journal.values() for line in open(exp_dir / r.dir / "result.json")}
    assert len(pids) == 1, pids

    board = json.loads(raynas("analyze", exp_dir, "--format", "json").stdout)
    assert [b["status"] for b in board[:2]] == ["completed", "completed"]
    failed = [b for b in board if b["status"] == "failed"]
    assert len(failed) == 4 and all(b["best"] is None and b["error"] for b in failed)
    table = raynas("analyze", exp_dir).stdout
    assert "failed: ArchError" in table


def test_user_family_data_source_and_trainable_next_to_the_yaml(tmp_path, ray_env):
    calls = tmp_path / "calls.txt"
    (tmp_path / "my_nas.py").write_text(
        textwrap.dedent(
            f"""
            import numpy as np

            def tiny(arch, input_shape, num_classes):
                import torch.nn as nn
                return nn.Sequential(nn.Flatten(), nn.LazyLinear(arch["hidden"]), nn.ReLU(),
                                     nn.Linear(arch["hidden"], num_classes))

            def blobs(n=300, seed=0):
                # Counts its calls: the data must be loaded once, not once per trial.
                with open({str(calls)!r}, "a") as f:
                    f.write("call\\n")
                rng = np.random.default_rng(seed)
                y = rng.integers(0, 3, n)
                x = rng.normal(size=(n, 5)).astype("float32") + y[:, None] * 4.0
                return x, y
            """
        )
    )
    exp = write_yaml(
        tmp_path / "user.yaml",
        {
            "name": "user",
            "data": {"source": "my_nas:blobs", "params": {"n": 300}},
            "model": "my_nas:tiny",
            "space": {"arch": {"hidden": {"choice": [4, 16]}}, "train": {"lr": 0.05}},
            "search": {"searcher": "grid"},
            "max_epochs": 3,
        },
    )
    env = ray_env
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()  # run from another folder: the module must come from the YAML's folder
    proc = raynas("run", exp, "--storage-path", tmp_path / "res", "--name", "mine", env=env, cwd=run_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (tmp_path / "res" / "user").exists()  # --name wins over the file's name
    assert "mine · 2/2 done" in proc.stdout and "user ·" not in proc.stdout  # in the live view too
    journal = read_journal(tmp_path / "res" / "mine")
    assert sorted(r.config["arch"]["hidden"] for r in journal.values()) == [4, 16]
    assert all(r.status.value == "completed" and r.best > 0.6 for r in journal.values())  # chance: 1/3
    assert calls.read_text().count("call") == 1


BROKEN = """
from ray import tune


def raises(config):
    raise ValueError("the data loader is broken")


def silent(config, context):
    for epoch in range(1, context["max_epochs"] + 1):  # the context reads as a mapping too
        tune.report({"score": 0.5, "epoch": epoch})
"""


@pytest.mark.parametrize(
    "function, expected",
    [
        ("raises", ["no trial scored the objective 'val_acc': 3 error", "3 x ValueError: the data loader is broken"]),
        ("silent", ["no trial scored the objective 'val_acc': 3 completed",
                    "trials ended without reporting 'val_acc'; they reported: epoch, score"]),
    ],
)
def test_a_search_in_which_no_trial_scored_exits_1_with_a_summary(tmp_path, ray_env, function, expected):
    """Every trial errored, or none reported the objective: exit 1 and say why in a few lines,
    as Ray Tune's own tune.run raises (not exit 0 with a table of failures)."""
    (tmp_path / "broken.py").write_text(BROKEN)
    exp = write_yaml(tmp_path / "broken.yaml", {
        "name": "broken", "trainable": f"broken:{function}",
        "space": {"x": {"choice": [1, 2, 3]}},
        "search": {"searcher": "grid", "max_concurrent": 1},
        "objective": {"metric": "val_acc", "mode": "max"}, "max_epochs": 2,
    })
    proc = raynas("run", exp, "--storage-path", tmp_path / "res", "--quiet", env=ray_env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    for line in expected:
        assert line in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) <= 8, proc.stderr
