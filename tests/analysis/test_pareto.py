"""Pareto fronts and hypervolumes: hand-made points with known answers, Optuna as an
independent check, and ``raynas analyze --pareto`` on hand-written experiment folders."""

import json

import numpy as np
import pytest

from raynas.analysis import load_results
from raynas.analysis.pareto import hypervolume, pareto_front
from raynas.cli import main
from raynas.errors import ConfigError
from raynas.experiment import Status, TrialRecord, update_meta, write_journal

from tests.helpers import raynas, write_yaml

# -- pareto_front ---------------------------------------------------------------------------


def test_front_2d_minimisation():
    points = np.array([[1, 3], [2, 2], [3, 1], [2, 3], [3, 3]], dtype=float)
    assert pareto_front(points, ["min", "min"]).tolist() == [0, 1, 2]


def test_front_mixed_modes():
    # val_acc (max), params (min): 3 is dominated by 0 (worse acc, more params); 4 by 1.
    points = np.array([[0.9, 300], [0.8, 100], [0.95, 900], [0.85, 400], [0.7, 100]], dtype=float)
    assert pareto_front(points, ["max", "min"]).tolist() == [0, 1, 2]
    # The same points, both maximised: the largest model is better on params now.
    assert pareto_front(points, ["max", "max"]).tolist() == [2]


def test_front_keeps_every_copy_of_an_equal_point():
    points = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [2.0, 2.0]])
    assert pareto_front(points, ["min", "min"]).tolist() == [0, 1, 2]


def test_front_weak_domination_drops_a_point():
    # Equal on one objective and worse on the other is dominated.
    assert pareto_front(np.array([[1.0, 1.0], [1.0, 2.0]]), ["min", "min"]).tolist() == [0]


def test_front_3d_and_edge_cases():
    points = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0.5, 0.5, 0.5]], dtype=float)
    assert pareto_front(points, ["min"] * 3).tolist() == [0, 1, 2, 4]
    assert pareto_front(points, ["max"] * 3).tolist() == [3]
    assert pareto_front(np.array([[5.0, 1.0]]), ["max", "min"]).tolist() == [0]
    assert pareto_front(np.zeros((0, 2)), ["max", "min"]).tolist() == []


def test_front_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n, d = rng.integers(1, 30), rng.integers(1, 5)
        points = np.round(rng.random((n, d)), 1)  # rounded: plenty of ties
        modes = list(rng.choice(["max", "min"], size=d))
        loss = points * np.where(np.array(modes) == "max", -1.0, 1.0)
        brute = [
            i for i in range(n)
            if not any(np.all(loss[j] <= loss[i]) and np.any(loss[j] < loss[i]) for j in range(n))
        ]
        assert pareto_front(points, modes).tolist() == brute


@pytest.mark.parametrize(
    "points, modes, match",
    [
        (np.ones(3), ["min"], "2-D"),
        (np.ones((2, 2)), ["min"], "1 modes for 2 objectives"),
        (np.ones((2, 2)), ["min", "maximize"], "'maximize'"),
        (np.array([[1.0, np.nan]]), ["min", "min"], "finite"),
    ],
)
def test_front_rejects_bad_input(points, modes, match):
    with pytest.raises(ValueError, match=match):
        pareto_front(points, modes)


# -- hypervolume ----------------------------------------------------------------------------


def test_hypervolume_2d_staircase():
    points = np.array([[1, 3], [2, 2], [3, 1], [2, 3], [3, 3]], dtype=float)
    # Steps of width 1 and heights 1, 2, 3 under the reference (4, 4); dominated points add nothing.
    assert hypervolume(points, ["min", "min"], [4, 4]) == pytest.approx(6.0)
    assert hypervolume(points[:3], ["min", "min"], [4, 4]) == pytest.approx(6.0)


def test_hypervolume_mixed_modes_is_the_mirrored_minimisation():
    points = np.array([[0.9, 300], [0.8, 100], [0.7, 200]], dtype=float)
    # Boxes 0.4 x 100 and 0.3 x 300 overlapping in 0.3 x 100.
    assert hypervolume(points, ["max", "min"], [0.5, 400]) == pytest.approx(40 + 90 - 30)
    mirrored = points * [-1, 1]
    assert hypervolume(mirrored, ["min", "min"], [-0.5, 400]) == pytest.approx(100.0)


def test_hypervolume_3d_inclusion_exclusion():
    points = np.eye(3)
    # Three boxes of 1x2x2, pairwise overlaps 1x1x2, all three overlap in 1x1x1: 12 - 6 + 1.
    assert hypervolume(points, ["min"] * 3, [2, 2, 2]) == pytest.approx(7.0)
    assert hypervolume(2 - points, ["max"] * 3, [0, 0, 0]) == pytest.approx(7.0)
    # Adding the dominated corner and a copy changes nothing.
    more = np.vstack([points, [[1, 1, 1]], points[:1]])
    assert hypervolume(more, ["min"] * 3, [2, 2, 2]) == pytest.approx(7.0)


def test_hypervolume_4d_known_value():
    # The 4 unit vectors against 2: four 1x2x2x2 boxes, every pair overlaps in 1x1x2x2, ...
    expected = 4 * 8 - 6 * 4 + 4 * 2 - 1 * 1
    assert hypervolume(np.eye(4), ["min"] * 4, [2] * 4) == pytest.approx(expected)


def test_hypervolume_single_point_duplicates_and_one_objective():
    assert hypervolume(np.array([[1.0, 2.0]]), ["min", "min"], [3, 5]) == pytest.approx(6.0)
    assert hypervolume(np.array([[1.0, 2.0]] * 3), ["min", "min"], [3, 5]) == pytest.approx(6.0)
    assert hypervolume(np.array([[0.7], [0.9]]), ["max"], [0.5]) == pytest.approx(0.4)


def test_hypervolume_counts_only_points_better_than_the_reference():
    points = np.array([[1.0, 1.0], [0.5, 5.0]])
    # The second point is beyond the reference on one objective: it adds nothing.
    assert hypervolume(points, ["min", "min"], [2, 2]) == pytest.approx(1.0)
    assert hypervolume(points, ["min", "min"], [0.2, 0.2]) == 0.0
    assert hypervolume(np.zeros((0, 2)), ["min", "min"], [1, 1]) == 0.0
    # On the reference's boundary: no volume.
    assert hypervolume(np.array([[2.0, 1.0]]), ["min", "min"], [2, 2]) == 0.0


def test_hypervolume_rejects_a_reference_of_the_wrong_length():
    with pytest.raises(ValueError, match="3 objectives"):
        hypervolume(np.ones((2, 2)), ["min", "min"], [1, 1, 1])


@pytest.mark.parametrize("dims, n", [(2, 60), (3, 60), (4, 40), (5, 15)])
def test_hypervolume_agrees_with_optuna(dims, n):
    # Optuna's exact implementation (private API, used here only as an independent check).
    hv_module = pytest.importorskip("optuna._hypervolume")
    rng = np.random.default_rng(dims)
    for round_ in range(5):
        raw = rng.random((n, dims))
        # Half of the rounds on a curved front (every point non-dominated), half random.
        points = raw / np.linalg.norm(raw, axis=1, keepdims=True) if round_ % 2 else np.round(raw, 2)
        ref = np.full(dims, 1.1)
        modes = list(rng.choice(["max", "min"], size=dims))
        signs = np.where(np.array(modes) == "max", -1.0, 1.0)
        ours = hypervolume(points * signs, modes, ref * signs)
        assert ours == pytest.approx(hv_module.compute_hypervolume(points, ref), rel=1e-12)


# -- experiment folders ---------------------------------------------------------------------

MULTI = {"metric": ["val_acc", "params"], "mode": ["max", "min"]}

# trial id: (status, per-epoch rows); params is per model, val_acc and val_loss per epoch.
TRIALS = {
    "a": (Status.COMPLETED, [{"val_acc": 0.6, "val_loss": 0.9}, {"val_acc": 0.8, "val_loss": 0.5}, {"val_acc": 0.7, "val_loss": 0.4}], 100),
    "b": (Status.COMPLETED, [{"val_acc": 0.85, "val_loss": 0.6}, {"val_acc": 0.9, "val_loss": 0.3}], 300),
    "c": (Status.STOPPED, [{"val_acc": 0.75, "val_loss": 0.7}], 200),  # dominated by a
    "d": (Status.STOPPED, [{"val_acc": 0.5, "val_loss": 1.0}], 50),
    # Reported one good epoch, then a non-finite loss: failed, so not on the front.
    "e": (Status.FAILED, [{"val_acc": 0.95, "val_loss": 0.1}], 10),
    # Superseded on resume: only with --all.
    "f": (Status.LOST, [{"val_acc": 0.99, "val_loss": 0.05}], 5),
    "g": (Status.RUNNING, [], None),  # nothing reported yet
    "h": (Status.STOPPED, [{"val_acc": 0.9, "val_loss": 0.35}], 300),  # equals b: both on the front
    "i": (Status.COMPLETED, [{"val_acc": 0.7, "val_loss": 0.8}], None),  # never reported params
}


def make_experiment(path, objective):
    """A hand-written experiment folder: the journal plus result logs, as a run leaves them."""
    path.mkdir()
    update_meta(path, name=path.name)
    write_yaml(path / "experiment.yaml", {"objective": objective, "max_epochs": 3})
    records = {}
    for order, (tid, (status, rows, params)) in enumerate(TRIALS.items(), start=1):
        d = path / f"trial_{tid}"
        d.mkdir()
        with open(d / "result.json", "w") as f:
            for epoch, row in enumerate(rows, start=1):
                extra = {"params": params} if params is not None else {}
                f.write(json.dumps({"epoch": epoch, **row, **extra, "training_iteration": epoch}) + "\n")
            if status is Status.FAILED:
                # Tune numbers every result, this one included.
                failure = {"raynas_status": "failed", "raynas_error": "non-finite loss", "training_iteration": len(rows) + 1}
                f.write(json.dumps(failure) + "\n")
        config = {"arch": {"width": 16 * order, "depth": 1 + order % 3}, "train": {"lr": 0.01}}
        records[tid] = TrialRecord(tid, order=order, status=status, config=config, dir=d.name, epochs=len(rows),
                                   error="non-finite loss" if status is Status.FAILED else None)
    write_journal(path, records)
    return path


@pytest.fixture
def multi(tmp_path):
    return make_experiment(tmp_path / "multi", MULTI)


@pytest.fixture
def single(tmp_path):
    return make_experiment(tmp_path / "single", {"metric": "val_acc", "mode": "max"})


def analyze(capsys, *args):
    code = main(["analyze", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_load_results_reads_every_objective(multi, single):
    results = load_results(multi)
    assert (results.metrics, results.modes) == (["val_acc", "params"], ["max", "min"])
    assert (results.metric, results.mode) == ("val_acc", "max")  # ranking stays on the first
    assert [t.trial_id for t in results.leaderboard(top=2)] == ["e", "b"]
    one = load_results(single)
    assert (one.metrics, one.modes) == (["val_acc"], ["max"])
    write_yaml(multi / "experiment.yaml", {"objective": {"metric": ["val_loss", "params"], "mode": "min"}})
    assert load_results(multi).modes == ["min", "min"]


@pytest.mark.parametrize(
    "objective, where",
    [
        ({"metric": ["val_acc", "params"], "mode": ["max"]}, "objective.mode: got 1 modes for 2 metrics"),
        ({"metric": ["val_acc", "params"], "mode": ["max", "smallest"]}, "objective.mode.1: must be 'max' or 'min', got 'smallest'"),
        ({"metric": ["val_acc", "val_acc"]}, "objective.metric: 'val_acc' is listed twice"),
        ({"metric": []}, "objective.metric: expected a metric name or a list of them"),
    ],
)
def test_load_results_rejects_a_bad_objective(multi, objective, where):
    write_yaml(multi / "experiment.yaml", {"objective": objective})
    with pytest.raises(ConfigError) as err:
        load_results(multi)
    assert str(err.value) == f"{multi / 'experiment.yaml'}: " + str(err.value).split(": ", 1)[1]
    assert where in str(err.value)


def test_objectives_come_from_the_best_epoch_on_the_first_metric(multi):
    trial = {t.trial_id: t for t in load_results(multi).trials}["a"]
    # Best val_acc at epoch 2: val_loss there is 0.5, not the best (0.4) nor the last (0.4).
    assert trial.objectives(["val_acc", "val_loss"], ["max", "min"]) == (2, {"val_acc": 0.8, "val_loss": 0.5})
    assert trial.objectives(["val_loss", "val_acc"], ["min", "max"]) == (3, {"val_loss": 0.4, "val_acc": 0.7})
    assert {t.trial_id: t for t in load_results(multi).trials}["i"].objectives(["val_acc", "params"], ["max", "min"]) is None


def test_pareto_front_of_an_experiment(multi):
    front = load_results(multi).pareto()
    assert [(f.rank, f.trial.trial_id, f.epoch, f.objectives) for f in front.front] == [
        (1, "b", 2, {"val_acc": 0.9, "params": 300}),
        (2, "h", 1, {"val_acc": 0.9, "params": 300}),  # equal to b, later trial
        (3, "a", 2, {"val_acc": 0.8, "params": 100}),
        (4, "d", 1, {"val_acc": 0.5, "params": 50}),
    ]
    # Failed e (would dominate), running g and params-less i are not scored; lost f not looked at.
    assert (front.scored, front.unscored) == (5, 3)
    assert front.normalisation == {"val_acc": {"min": 0.5, "max": 0.9}, "params": {"min": 50.0, "max": 300.0}}
    # Scaled to 0 (best) .. 1 (worst): b (0, 1), a (0.25, 0.2), d (1, 0); reference (1.1, 1.1):
    # 0.25 * 0.1 + 0.75 * 0.9 + 0.1 * 1.1 = 0.81.
    assert front.hypervolume == pytest.approx(0.81)
    assert not front.reference_given and front.reference_normalised == [1.1, 1.1]
    assert front.reference == pytest.approx([0.9 - 1.1 * 0.4, 50 + 1.1 * 250])
    assert front.hypervolume_raw == pytest.approx(0.81 * 0.4 * 250)


def test_pareto_with_an_explicit_reference(multi):
    front = load_results(multi).pareto(reference=[0.4, 400])
    # Raw staircase against (0.4, 400): 0.1 * 100 + 0.3 * 300 + 0.1 * 350.
    assert front.hypervolume_raw == pytest.approx(135.0)
    assert front.hypervolume == pytest.approx(135.0 / (0.4 * 250))
    assert front.reference_given and front.reference == [0.4, 400.0]
    assert front.reference_normalised == pytest.approx([1.25, 1.4])
    # A reference better than every trial on one objective leaves no volume.
    assert load_results(multi).pareto(reference=[0.95, 400]).hypervolume == 0.0


def test_pareto_with_lost_trials_and_with_other_metrics(multi):
    results = load_results(multi)
    assert [f.trial.trial_id for f in results.pareto(include_lost=True).front] == ["f"]
    front = results.pareto(["val_acc", "val_loss"], ["max", "min"])
    # Values at each trial's best val_acc epoch; i has no params but counts here.
    assert [(f.trial.trial_id, f.objectives["val_loss"]) for f in front.front] == [("b", 0.3)]
    assert front.scored == 6
    three = results.pareto(["val_acc", "val_loss", "params"], "min")
    # Every objective minimised, so each trial's point is its lowest-val_acc epoch.
    assert three.modes == ["min", "min", "min"] and [f.trial.trial_id for f in three.front] == ["d", "a", "c", "b", "h"]
    assert three.front[1].objectives == {"val_acc": 0.6, "val_loss": 0.9, "params": 100}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"metrics": ["val_acc", "parms"], "modes": "max"}, "metrics: no trial reported 'parms' (did you mean 'params'?)"),
        ({"metrics": ["val_acc", "params"]}, "modes: give a mode"),
        ({"modes": ["max", "max"]}, "modes: modes go with metrics"),
        ({"metrics": ["val_acc"], "modes": "max"}, "metrics: a Pareto front needs two or more objectives"),
        ({"reference": [0.5]}, "reference: expected 2 finite numbers"),
        ({"reference": [0.5, float("nan")]}, "reference: expected 2 finite numbers"),
    ],
)
def test_pareto_rejects_bad_arguments(multi, kwargs, match):
    with pytest.raises(ConfigError) as err:
        load_results(multi).pareto(**kwargs)
    assert match in str(err.value)


def test_pareto_of_an_experiment_with_no_scores_yet(tmp_path):
    exp = tmp_path / "empty"
    exp.mkdir()
    update_meta(exp, name="empty")
    write_yaml(exp / "experiment.yaml", {"objective": MULTI})
    write_journal(exp, {"x": TrialRecord("x", order=1, status=Status.RUNNING)})
    front = load_results(exp).pareto()
    assert (front.front, front.hypervolume, front.scored, front.unscored) == ([], 0.0, 0, 1)
    assert main(["analyze", str(exp), "--pareto"]) == 0


# -- the command line -----------------------------------------------------------------------


def test_cli_pareto_table(multi, capsys):
    code, out, err = analyze(capsys, multi, "--pareto")
    assert code == 0 and not err
    lines = out.splitlines()
    assert lines[0] == "multi: Pareto front of val_acc (max), params (min): 4 of 5 scored trials (3 more not scored: failed, errored, or missing an objective)"
    assert lines[1].split() == ["rank", "#", "trial", "status", "epoch", "val_acc", "params", "width", "depth"]
    assert [line.split()[:7] for line in lines[2:6]] == [
        ["1", "2", "b", "completed", "2", "0.9000", "300"],
        ["2", "8", "h", "stopped", "1", "0.9000", "300"],
        ["3", "1", "a", "completed", "2", "0.8000", "100"],
        ["4", "4", "d", "stopped", "1", "0.5000", "50"],
    ]
    assert lines[6].startswith("hypervolume 0.8100: objectives scaled to 0 (best) .. 1 (worst) over the 5 scored trials")
    assert "reference 1.1 on each (val_acc 0.46, params 325)" in lines[6]
    code, out, _ = analyze(capsys, multi, "--pareto", "--top", "2", "--reference", "0.4,400")
    assert "  ... 2 more on the front" in out
    assert "given reference val_acc 0.4, params 400 (scaled: 1.25, 1.4); in the metrics' own units 135" in out


def test_cli_pareto_json(multi, capsys):
    code, out, _ = analyze(capsys, multi, "--pareto", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["metrics"] == ["val_acc", "params"] and data["modes"] == ["max", "min"]
    assert data["hypervolume"] == pytest.approx(0.81) and data["reference"] == pytest.approx([0.46, 325])
    assert data["normalisation"]["params"] == {"min": 50.0, "max": 300.0}
    assert [t["trial_id"] for t in data["front"]] == ["b", "h", "a", "d"]
    first = data["front"][0]
    # The normal --format json item, ranked along the front, plus its objectives.
    assert first["objectives"] == {"val_acc": 0.9, "params": 300} and first["objectives_epoch"] == 2
    assert first["rank"] == 1 and first["config"]["arch"]["width"] == 32 and first["status"] == "completed"
    _, out, _ = analyze(capsys, multi, "--pareto", "--format", "json", "--all")
    assert [t["trial_id"] for t in json.loads(out)["front"]] == ["f"]


def test_cli_pareto_csv(multi, capsys):
    code, out, _ = analyze(capsys, multi, "--pareto", "--format", "csv")
    rows = out.strip().splitlines()
    assert code == 0 and len(rows) == 5
    assert rows[0].startswith("rank,order,trial_id,status,epoch,val_acc,params,config.arch.width")
    assert rows[1].startswith("1,2,b,completed,2,0.9,300,")


def test_cli_single_objective_with_objectives_flag(single, capsys):
    code, out, _ = analyze(capsys, single, "--pareto", "--objectives", "val_acc:max, params:min", "--format", "json")
    data = json.loads(out)
    assert code == 0 and [t["trial_id"] for t in data["front"]] == ["b", "h", "a", "d"]
    assert data["hypervolume"] == pytest.approx(0.81)
    code, out, _ = analyze(capsys, single, "--pareto", "--objectives", "val_acc:max,val_loss:min")
    assert code == 0 and "Pareto front of val_acc (max), val_loss (min): 1 of 6 scored trials" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pareto"], "--pareto: single has one objective (val_acc); a Pareto front needs two or more: give objective.metric a list"),
        (["--pareto", "--objectives", "val_acc:maximize,params:min"], "--objectives: val_acc: mode must be 'max' or 'min', got 'maximize'"),
        (["--pareto", "--objectives", "val_acc:max,parms:min"], "--objectives: no trial reported 'parms' (did you mean 'params'?); reported: epoch, params, val_acc, val_loss"),
        (["--pareto", "--objectives", "val_acc:max"], "--objectives: a Pareto front needs two or more objectives"),
        (["--pareto", "--objectives", "val_acc,params"], "--objectives: expected METRIC:MODE pairs"),
        (["--pareto", "--objectives", "val_acc:max,val_acc:min"], "--objectives: 'val_acc' is listed twice"),
        (["--pareto", "--objectives", "val_acc:max,params:min", "--reference", "0.5"], "--reference: expected 2 finite numbers"),
        (["--pareto", "--objectives", "val_acc:max,params:min", "--reference", "0.5,big"], "--reference: expected numbers separated by commas, got 'big'"),
        (["--objectives", "val_acc:max,params:min"], "--objectives: applies to a Pareto front only; add --pareto"),
    ],
)
def test_cli_bad_pareto_input_is_one_clear_error(single, capsys, args, message):
    code, out, err = analyze(capsys, single, *args)
    lines = err.strip().splitlines()
    assert code == 2 and not out and len(lines) == 1, err
    assert lines[0].startswith(f"raynas: error: {message}"), lines[0]


def test_cli_pareto_error_through_the_console_script(single):
    # The real process: exit status 2 and one line, no traceback.
    proc = raynas("analyze", single, "--pareto")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--objectives val_acc:max,params:min" in proc.stderr
