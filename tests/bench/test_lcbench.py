"""The LCBench surrogate read with onnxruntime: YAHPO's encoding, plausible outputs, checked params."""

import math

import pytest

from raynas.errors import ConfigError
from tests.helpers import SHARED

DATA = SHARED / "data" / "yahpo"
pytest.importorskip("onnxruntime", reason="raynas[bench] is not installed (pip install -e '.[bench]')")
if not (DATA / "lcbench" / "model.onnx").is_file():
    pytest.skip(f"the YAHPO LCBench data is not at {DATA}/lcbench", allow_module_level=True)

from raynas.bench import LCBENCH_DEFAULT, LCBENCH_SPACE, LCBenchSurrogate  # noqa: E402
from raynas.bench.lcbench import OUTPUTS, default_data_dir, hyperparameters, known_tasks, lcbench_dir  # noqa: E402
from raynas.spec import spec_from_dict  # noqa: E402
from raynas.spaces import Space  # noqa: E402

TASKS = ["3945", "167168", "189906"]


@pytest.fixture(scope="module")
def surrogate():
    return LCBenchSurrogate(DATA)


def test_default_data_dir_is_the_shared_folder_or_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("RAYNAS_YAHPO_DATA", raising=False)
    assert lcbench_dir() == (DATA / "lcbench").resolve()
    monkeypatch.setenv("RAYNAS_YAHPO_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        lcbench_dir()


def test_known_tasks_are_the_34_of_the_config_space(surrogate):
    tasks = known_tasks(DATA)
    assert len(tasks) == 34 and set(TASKS) <= set(tasks)
    assert set(tasks) <= set(surrogate.tasks)


@pytest.mark.parametrize("task", TASKS)
def test_default_config_curves_are_plausible(surrogate, task):
    curve = surrogate.curve(task, LCBENCH_DEFAULT)
    assert set(curve) == set(OUTPUTS) and all(len(v) == 52 for v in curve.values())
    acc = curve["val_accuracy"]
    assert all(0.0 < a <= 100.0 for a in acc), acc  # LCBench reports accuracy in percent
    assert acc[-1] > acc[0] + 5, "training for 52 epochs should beat the first epoch"
    for name in ("val_balanced_accuracy", "test_balanced_accuracy"):
        assert all(0.0 <= v <= 1.0 for v in curve[name]), name
    for name in ("val_cross_entropy", "test_cross_entropy"):
        assert all(0.0 < v < 10.0 for v in curve[name]), name
    time = curve["time"]  # seconds of training so far
    assert time[0] > 0 and time[-1] > 10 * time[0]
    assert all(b >= a - 1e-3 for a, b in zip(time, time[1:])), "cumulative time never decreases"
    assert time[-1] > time[25] > time[0]


def test_predictions_are_deterministic_and_batch_independent(surrogate):
    one = surrogate.predict("3945", LCBENCH_DEFAULT, [7])
    again = surrogate.predict("3945", LCBENCH_DEFAULT, [7])
    batch = surrogate.predict("3945", LCBENCH_DEFAULT, range(1, 53))
    assert (one == again).all()
    assert one[0] == pytest.approx(batch[6], rel=1e-5, abs=1e-5)


def test_the_task_and_the_hyperparameters_change_the_prediction(surrogate):
    a = surrogate.curve("3945", LCBENCH_DEFAULT)
    b = surrogate.curve("167168", LCBENCH_DEFAULT)
    assert a["val_accuracy"][-1] != pytest.approx(b["val_accuracy"][-1], abs=0.5)
    # Wider and deeper networks take longer to train (the inputs land in the right columns).
    for task in TASKS:
        times = [surrogate.curve(task, {**LCBENCH_DEFAULT, "max_units": u})["time"][-1] for u in (64, 256, 1024)]
        assert times == sorted(times), (task, times)
        shallow = surrogate.curve(task, {**LCBENCH_DEFAULT, "num_layers": 1})["time"][-1]
        assert shallow < surrogate.curve(task, {**LCBENCH_DEFAULT, "num_layers": 5})["time"][-1], task


def test_sampled_configs_stay_in_range(surrogate):
    space = Space(LCBENCH_SPACE)
    for seed in range(20):
        out = surrogate.predict("189906", space.sample(seed=seed), [1, 26, 52])
        for row in out:
            assert all(math.isfinite(float(v)) for v in row)
            assert -1.0 <= float(row[1]) <= 101.0  # val_accuracy, percent (a surrogate may overshoot slightly)


def test_unknown_task_is_named(surrogate):
    with pytest.raises(KeyError, match="unknown LCBench task '12'"):
        surrogate.predict("12", LCBENCH_DEFAULT, [1])


def test_hyperparameters_are_found_top_level_or_nested():
    nested = {"arch": {k: LCBENCH_DEFAULT[k] for k in ("num_layers", "max_units", "max_dropout")},
              "train": {k: v for k, v in LCBENCH_DEFAULT.items() if k not in ("num_layers", "max_units", "max_dropout")}}
    assert hyperparameters(nested) == hyperparameters(LCBENCH_DEFAULT) == LCBENCH_DEFAULT
    with pytest.raises(KeyError, match="momentum"):
        hyperparameters({k: v for k, v in LCBENCH_DEFAULT.items() if k != "momentum"})


def spec(**params):
    return {
        "name": "lc",
        "trainable": {"function": "raynas.bench:lcbench", "params": {"task": "3945", "data_path": str(DATA), **params}},
        "space": LCBENCH_SPACE,
        "objective": {"metric": "val_accuracy", "mode": "max"},
        "max_epochs": 52,
    }


def test_params_are_checked_before_ray_starts():
    s = spec_from_dict(spec(speedup=50))
    assert s.trainable == "raynas.bench:lcbench"
    assert s.trainable_params == {"task": "3945", "speedup": 50.0, "sleep": True, "data_path": str((DATA / "lcbench").resolve())}
    assert "val_accuracy" in s.metrics and "sim_time" in s.metrics
    cases = [
        (spec(task="39450"), "trainable.params.task: unknown LCBench task '39450' (did you mean '3945'?)"),
        (spec(task=None), "trainable.params.task: name the OpenML task id"),
        (spec(speedup=0), "trainable.params.speedup: must be > 0, got 0"),
        (spec(speed=3), "trainable.params.speed: unknown key (did you mean 'speedup'?)"),
        (spec(data_path="/no/such/folder"), "trainable.params.data_path: no YAHPO LCBench surrogate at /no/such/folder"),
        ({**spec(), "max_epochs": 60}, "max_epochs: LCBench has 52 epochs per configuration, got max_epochs=60"),
        ({**spec(), "space": {"batch_size": 32}}, "lacks LCBench hyperparameters learning_rate"),
        ({**spec(), "objective": {"metric": "val_acc"}}, "objective.metric: the trainable never reports 'val_acc' (did you mean 'val_accuracy'?)"),
    ]
    for raw, message in cases:
        with pytest.raises(ConfigError) as err:
            spec_from_dict(raw, file="x.yaml")
        assert message in str(err.value) and str(err.value).startswith("x.yaml: "), str(err.value)


def test_the_example_experiment_validates_with_the_ready_made_space():
    from raynas.spec import load_spec
    from tests.helpers import EXPERIMENTS

    s = load_spec(EXPERIMENTS / "lcbench.yaml", [f"trainable.params.data_path={DATA}"])
    assert s.raw["space"] == LCBENCH_SPACE and s.max_epochs == 52
    assert s.trainable_params["task"] == "3945"
