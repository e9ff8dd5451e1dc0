"""The command line: validate, bad input (exit 2, no Ray, nothing changed), analyze without Ray."""

import json
from pathlib import Path

import pytest

from raynas.cli import _check_dashboard, main
from raynas.errors import ConfigError

from tests.helpers import EXPERIMENTS, QUICKSTART, folder_state, raynas, write_yaml


@pytest.mark.parametrize("exp", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_experiment_file_validates(exp, ray_env, tmp_path):
    if exp.stem == "quickstart_warm":
        # It warm-starts from raynas_results/quickstart where raynas runs: as after running the
        # quickstart there (a folder with its experiment file, no trials yet).
        earlier = tmp_path / "raynas_results" / "quickstart"
        earlier.mkdir(parents=True)
        (earlier / "raynas.json").write_text("{}")
        (earlier / "experiment.yaml").write_text(QUICKSTART.read_text())
    proc = raynas("validate", exp, env=ray_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{exp}: ok" in proc.stdout and "space:" in proc.stdout
    assert not any(Path(ray_env["RAY_TMPDIR"]).iterdir())


def test_validate_prints_size_and_settings(capsys):
    assert main(["validate", str(QUICKSTART)]) == 0
    out = capsys.readouterr().out
    assert "96 discrete combinations" in out and "optuna, 24 trials" in out and "asha" in out
    assert "sampler=auto n_startup_trials=8" in out


def test_validate_says_where_a_data_parallel_supernet_trains(capsys):
    overrides = ["--set", "resources.workers_per_trial=2", "--set", "resources.cpus_per_trial=0.5"]
    assert main(["validate", str(EXPERIMENTS / "oneshot_digits.yaml"), *overrides]) == 0
    assert ("resources:  the supernet on 2 data-parallel Ray Train workers of 0.5 CPU, 0 GPU each; "
            "subnets 0.5 CPU, 0 GPU per trial") in capsys.readouterr().out


def test_validate_prints_evolution_sizes_derived_from_the_budget(capsys):
    overrides = ["--set", "search.num_trials=120", "--set", "search.population_size=null", "--set", "search.sample_size=null"]
    assert main(["validate", str(EXPERIMENTS / "evolution_digits.yaml"), *overrides]) == 0
    assert "evolution, 120 trials, max_epochs 10; population_size=12 sample_size=9 mutations=2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, where",
    [
        ({"search": {"searcher": "bayes"}}, "search.searcher: unknown searcher 'bayes'"),
        ({"space": {"arch": {"depth": {"int": [4, 2]}}}}, "space.arch.depth: int range needs low <= high, got low=4, high=2"),
        ({"objective": {"metric": "accuracy"}}, "objective.metric: the trainable never reports 'accuracy'"),
        ({"data": {"source": "csv", "path": "missing.csv", "target": "y"}}, "data.path"),
        ({"modle": "mlp"}, "modle: unknown key (did you mean 'model'?)"),
        # A misspelt domain keyword would be a fixed nested dict, and every trial would fail.
        ({"space": {"arch": {"width": {"choise": [32, 64]}}}},
         "space.arch.width.choise: 'choise' is not a domain keyword (did you mean 'choice'?)"),
        # An arch key the family does not know: sampled architectures are built before Ray starts.
        ({"space": {"arch": {"widht": {"choice": [32, 64]}}}},
         "space.arch.widht: unknown key; allowed keys: depth, width, layers, activation, dropout, batch_norm (did you mean 'width'?)"),
        ({"model": "cnn", "space": {"arch": {"stages": {"repeat": {"min": 4, "max": 4}, "block": {"channels": 8, "stride": 2}}}}},
         "space.arch: none of 8 sampled architectures of model 'cnn' fits the data (input 1x8x8, 10 classes)"),
        # One-shot search: a family without a supernet, and a searched key that cannot share weights.
        ({"model": "resnet", "space": {"arch": {"stages": [{"channels": 8}]}}, "search": {"strategy": "one-shot"}},
         "model: one-shot search needs a family whose choices can share weights (cell, mbconv, transformer, mlp, cnn); "
         "'resnet' has no supernet"),
        ({"model": "cell", "search": {"strategy": "one-shot"},
          "space": {"arch": {"edges": {"0-1": {"choice": ["skip", "conv3x3"]}}, "nodes": 2, "channels": {"choice": [8, 16]}}}},
         "space.arch.channels: is searched, but in a cell supernet only arch.edges, arch.reduction_edges share weights"),
        ({"model": "mbconv", "search": {"strategy": "one-shot"},
          "space": {"arch": {"stages": {"repeat": {"min": 1, "max": 2}, "block": {"channels": 8}}}}},
         "space.arch.stages: an mbconv supernet holds a constant list of stages"),
        ({"model": "mbconv", "search": {"strategy": "gradient"}, "space": {"arch": {"stages": [{"channels": 8}]}}},
         "space.arch.stages: gradient search relaxes the choices of each layer (its op, expansion, kernel, or whether "
         "a stage's repeat keeps it), but every layer of this space is a constant: there is nothing to search"),
        ({"model": "mbconv", "search": {"strategy": "gradient"},
          "space": {"arch": {"stages": [{"channels": {"choice": [8, 16]}, "layers": [{"kernel": {"choice": [3, 5]}}]}]}}},
         "space.arch.stages.0.channels: gradient search mixes the candidates of each layer, which must share one shape"),
        # A supernet whose constants do not fit the data: the architecture check says why.
        ({"model": "cell", "search": {"strategy": "one-shot"},
          "space": {"arch": {"edges": {"0-1": {"choice": ["skip", "conv3x3"]}}, "nodes": 2, "stages": 6}}},
         "space.arch: none of 8 sampled architectures of model 'cell' fits the data (input 1x8x8, 10 classes)"),
        # A supernet far larger than any machine's memory (estimated on PyTorch's meta device).
        ({"model": "cell", "search": {"strategy": "one-shot"},
          "space": {"arch": {"edges": {"0-1": {"choice": ["skip", "conv3x3"]}}, "nodes": 2, "channels": 65536}}},
         "space.arch.channels: the one-shot search's supernet does not fit: training it needs about 41.2 TiB"),
        ({"model": "cell", "search": {"strategy": "gradient"},
          "space": {"arch": {"edges": {"0-1": {"choice": ["skip", "conv3x3"]}}, "nodes": 2, "channels": 65536}}},
         "space.arch.channels: the gradient search's supernet does not fit: training it needs about 41.2 TiB"),
        # Data-parallel training through Ray Train is the one-shot supernet's.
        ({"resources": {"workers_per_trial": 2}},
         "resources.workers_per_trial: data-parallel training (Ray Train) is built for the supernet of search.strategy: one-shot"),
    ],
)
def test_bad_input_exits_2_before_ray_and_changes_nothing(tmp_path, ray_env, change, where):
    # An existing results folder for this name: a bad file must leave it exactly as it was.
    results = tmp_path / "res" / "bad"
    results.mkdir(parents=True)
    (results / "keep.txt").write_text("untouched")
    before = folder_state(tmp_path / "res")
    raw = {"name": "bad", "space": {"arch": {"depth": 1}}, **change}
    exp = write_yaml(tmp_path / "bad.yaml", raw)
    for command in (["validate", exp], ["run", exp, "--storage-path", tmp_path / "res"]):
        proc = raynas(*command, env=ray_env)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, proc.stderr  # one clear message, not a traceback
        assert lines[0].startswith(f"raynas: error: {exp}: ") and where in lines[0], lines[0]
    assert folder_state(tmp_path / "res") == before
    assert not any(Path(ray_env["RAY_TMPDIR"]).iterdir()), "Ray must not start on bad input"


def test_validate_loads_the_data_and_warns_of_architectures_that_do_not_fit(tmp_path, ray_env):
    """An all-numeric CSV (sklearn's wine) loads; a space of which some architectures cannot
    fit 8x8 digits passes with a warning (those trials fail alone)."""
    from sklearn.datasets import load_wine

    load_wine(as_frame=True).frame.to_csv(tmp_path / "wine.csv", index=False)
    wine = write_yaml(tmp_path / "wine.yaml", {
        "name": "wine", "data": {"source": "csv", "path": "wine.csv", "target": "target"},
        "space": {"arch": {"depth": {"int": [1, 3]}}}})
    proc = raynas("validate", wine, env=ray_env)
    assert proc.returncode == 0, proc.stderr
    assert "data: csv (142 train, 36 val, no test split, input 13, 3 classes)" in proc.stdout
    deep = write_yaml(tmp_path / "deep.yaml", {
        "name": "deep", "model": "cnn",
        "space": {"arch": {"stages": {"repeat": {"min": 1, "max": 5}, "block": {"channels": 8, "stride": 2}}}}})
    proc = raynas("validate", deep, env=ray_env)
    assert proc.returncode == 0, proc.stderr
    assert "sampled architectures do not fit the input 1x8x8" in proc.stderr
    assert "stride-2 downsampling needs a spatial size >= 2" in proc.stderr
    assert not any(Path(ray_env["RAY_TMPDIR"]).iterdir())


def test_set_overrides_are_validated_like_the_file(ray_env):
    proc = raynas("validate", QUICKSTART, "--set", "scheduler.grace_period=50", env=ray_env)
    assert proc.returncode == 2
    assert "scheduler.grace_period: must be <= max_t (10), got 50" in proc.stderr


def test_analyze_refuses_a_folder_that_is_not_an_experiment(tmp_path):
    proc = raynas("analyze", tmp_path)
    assert proc.returncode == 2 and "not a raynas experiment folder" in proc.stderr
    proc = raynas("analyze", tmp_path / "nope")
    assert proc.returncode == 2 and "no such folder" in proc.stderr


def test_dashboard_without_its_packages_is_a_clear_error(monkeypatch):
    import ray._private.utils as ray_utils

    monkeypatch.setattr(ray_utils, "get_dashboard_dependency_error", lambda: ImportError("No module named 'aiohttp_cors'"))

    class Args:
        dashboard = True

    with pytest.raises(ConfigError) as err:
        _check_dashboard(Args())
    assert "pip install 'raynas[dashboard]'" in str(err.value) and "aiohttp_cors" in str(err.value)


def test_analyze_reads_a_folder_without_ray(tmp_path):
    # A hand-written experiment folder: the journal plus result logs, as a run leaves them.
    from raynas.experiment import Status, TrialRecord, update_meta, write_journal

    exp = tmp_path / "exp"
    exp.mkdir()
    update_meta(exp, name="exp")
    (exp / "experiment.yaml").write_text("objective: {metric: val_loss, mode: min}\nmax_epochs: 3\n")
    curves = {"a": [0.9, 0.5, 0.7], "b": [0.8, 0.6, 0.55], "c": [1.2]}
    records = {}
    for order, (tid, losses) in enumerate(curves.items(), start=1):
        d = exp / f"trial_{tid}"
        d.mkdir()
        with open(d / "result.json", "w") as f:
            for epoch, loss in enumerate(losses, start=1):
                f.write(json.dumps({"epoch": epoch, "val_loss": loss, "params": 10 * order}) + "\n")
        status = Status.COMPLETED if len(losses) == 3 else Status.STOPPED
        records[tid] = TrialRecord(tid, order=order, status=status, config={"arch": {"w": order}}, dir=d.name, epochs=len(losses))
    records["d"] = TrialRecord("d", order=4, status=Status.FAILED, config={"arch": {"w": 4}}, error="ArchError: too small")
    write_journal(exp, records)
    board = json.loads(raynas("analyze", exp, "--format", "json").stdout)
    # min mode: a's best is 0.5 (epoch 2), b's 0.55, c's 1.2; the failed trial comes last.
    assert [(b["trial_id"], b["best"], b["best_epoch"]) for b in board] == [
        ("a", 0.5, 2), ("b", 0.55, 3), ("c", 1.2, 1), ("d", None, None)
    ]
    assert board[0]["metrics"]["val_loss"] == 0.7  # the last reported, not the best
    assert [b["order"] for b in board] == [1, 2, 3, 4]
    table = raynas("analyze", exp, "--top", "2").stdout
    assert "ranked by best val_loss (min)" in table and " a " in table and " c " not in table


def _stages_folder(tmp_path):
    """A hand-written folder of trials with a repeated block, an origin and a stop point."""
    from raynas.experiment import Status, TrialRecord, update_meta, write_journal

    exp = tmp_path / "stages"
    exp.mkdir()
    update_meta(exp, name="stages")
    (exp / "experiment.yaml").write_text("objective: {metric: val_acc, mode: max}\nmax_epochs: 2\n")
    records = {}
    for order in range(1, 4):
        tid = f"t{order}"
        (exp / f"trial_{tid}").mkdir()
        (exp / f"trial_{tid}" / "result.json").write_text(json.dumps({"epoch": 1, "val_acc": 0.1 * order}) + "\n")
        if order == 3:  # one trial with costs: those columns stay
            (exp / f"trial_{tid}" / "result.json").write_text(json.dumps(
                {"epoch": 1, "val_acc": 0.3, "params": 123456, "flops": 2.5e6, "latency_ms": 0.123}) + "\n")
        stages = [{"channels": 16 * order, "kernel": 3, "pool": True}] * order
        config = {"arch": {"stages": stages, "activation": "relu" if order % 2 else "gelu",
                           "head_width": 64 * order, "dropout": 0.1 * order},
                  "train": {"lr": 0.001 * order, "batch_size": 32 * order, "weight_decay": 1e-5 * order}}
        records[tid] = TrialRecord(tid, order=order, status=Status.STOPPED, config=config, dir=f"trial_{tid}", epochs=1,
                                   origin={"searcher": "evolution", "how": "mutation", "parent": "t1"})
    write_journal(exp, records)
    return exp


def test_analyze_shows_repeated_blocks_and_fits_the_terminal(tmp_path):
    from raynas.analysis import load_results
    from raynas.analysis.render import table

    results = load_results(_stages_folder(tmp_path))
    wide = table(results)
    header = wide.splitlines()[1].split()
    assert "stages" in header  # a repeated block folds into one column, its blocks shown
    assert "48/3/T 48/3/T 48/3/T" in wide
    for width in (80, 95):
        narrow = table(results, width=width)
        assert all(len(line) <= width for line in narrow.splitlines()[1:]), narrow
        header = narrow.splitlines()[1].split()
        # Left out first: the searcher, latency and FLOPs, then config keys from the right.
        assert "params" in header and "latency_ms" not in header and "searcher" not in header, narrow
        assert ("stages" in header) == (width == 95), narrow
        assert "not shown for the terminal's width, see --format csv or json" in narrow
    assert len(narrow.splitlines()[1].split()) < len(table(results, width=1000).splitlines()[1].split())


def test_analyze_csv_writes_nested_values_as_json(tmp_path):
    import csv
    import io

    proc = raynas("analyze", _stages_folder(tmp_path), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert json.loads(rows[0]["origin"]) == {"searcher": "evolution", "how": "mutation", "parent": "t1"}


def test_bad_warm_start_or_points_exit_2_before_ray_and_change_nothing(tmp_path, ray_env):
    """search.warm_start names folders that must be experiments with this objective; search.points
    must be configurations of the space. Each mistake: one line naming the key, exit 2, no Ray."""
    (tmp_path / "empty").mkdir()
    other = tmp_path / "other"  # an experiment folder that minimised val_loss
    other.mkdir()
    (other / "raynas.json").write_text("{}")
    write_yaml(other / "experiment.yaml", {"name": "other", "objective": {"metric": "val_loss", "mode": "min"}})
    results = tmp_path / "res" / "bad"
    results.mkdir(parents=True)
    (results / "keep.txt").write_text("untouched")
    before = folder_state(tmp_path)
    space = {"arch": {"depth": {"int": [1, 3]}}}
    cases = [
        ({"warm_start": ["nowhere"]}, f"search.warm_start[0]: {tmp_path / 'nowhere'} does not exist (a relative path, here 'nowhere', is read from the folder raynas runs in"),
        ({"warm_start": [str(tmp_path / "empty")]}, "search.warm_start[0]: " + str(tmp_path / "empty") + " is not a raynas experiment folder"),
        ({"warm_start": [str(other)]}, f"search.warm_start[0]: {other} optimised min val_loss, this experiment max val_acc; a warm start needs the same objective"),
        ({"points": [{"arch": {"depth": 5}}]}, "search.points[0]: not a configuration of the space: arch.depth: 5 -> 3 would be needed to fit it"),
        ({"points": [{"arch": {"depth": 1}}] * 3, "num_trials": 2}, "search.points: 3 points, more than the 2 trials the search runs"),
        ({"prescreen": {"proxy": "naswt"}}, "search.prescreen.proxy: unknown proxy 'naswt' (did you mean 'naswot'?)"),
        ({"prescreen": {"proxy": "snip", "candidates": 1}}, "search.prescreen.candidates"),
    ]
    for i, (search, where) in enumerate(cases):
        exp = write_yaml(tmp_path / "bad.yaml", {"name": "bad", "space": space, "search": search})
        commands = [["run", exp, "--storage-path", tmp_path / "res"]] + ([["validate", exp]] if i == 0 else [])
        for command in commands:
            proc = raynas(*command, env=ray_env, cwd=tmp_path)
            assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith(f"raynas: error: {exp}: ") and where in lines[0], lines
    (tmp_path / "bad.yaml").unlink()
    assert folder_state(tmp_path) == before
    assert not any(Path(ray_env["RAY_TMPDIR"]).iterdir()), "Ray must not start on bad input"
