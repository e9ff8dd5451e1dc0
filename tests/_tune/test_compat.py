"""_tune: every feature applies on the pinned Ray, each patch replaces its targets only inside
its block, and a feature that cannot apply is named once, with what is lost.

No Ray is started: the patches are checked on Tune's classes, with the connected Ray's session
stood in for where a patch applies only in a Ray that raynas started.
"""

import ast
import io
import pathlib

import pytest
import ray
from ray.tune.execution.class_cache import _ActorClassCache
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import trial as trial_module

import raynas._tune as tune_wall
from raynas._tune import FEATURES, Feature, Target, check_compat, controller, workers
from raynas._tune.patches import patched

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_installed_ray_is_the_one_pyproject_pins():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"ray[tune]>=2.60,<2.61"' in text
    assert ray.__version__.startswith("2.60.")


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
def test_every_feature_applies_on_the_pinned_ray(feature):
    assert feature.problems() == []
    assert feature.reason and feature.lost and feature.targets and feature.where


def test_check_compat_is_silent_on_the_pinned_ray():
    out = io.StringIO()
    assert check_compat(stream=out) == []
    assert out.getvalue() == ""


class _Throwaway:
    def method(self, a, b):
        self._used = a

    def other(self, x):
        pass


def _feature(name, *targets):
    return Feature(name, f"{name}: why", f"{name}: what is lost", targets, "tests")


def test_a_target_is_checked_for_presence_parameters_and_the_attributes_its_class_uses():
    here = f"{__name__}:_Throwaway"
    assert Target(f"{here}.method", ("self", "a")).problem() is None
    assert "missing" in Target(f"{here}.gone").problem()
    assert "cannot import" in Target("raynas_no_such_module:x").problem()
    assert "expected (self, c" in Target(f"{here}.method", ("self", "c")).problem()
    assert Target(here, uses=("_used",)).problem() is None
    assert "no longer uses _unused" in Target(here, uses=("_used", "_unused")).problem()


def test_a_feature_that_cannot_apply_is_named_once_with_what_is_lost():
    missing = _feature("raynas_test_missing", Target(f"{__name__}:_Throwaway.gone"))
    fine = _feature("raynas_test_fine", Target(f"{__name__}:_Throwaway.method", ("self", "a", "b")))
    out = io.StringIO()
    assert check_compat([missing, fine], stream=out) == [missing]
    text = out.getvalue()
    assert "raynas_test_missing: lost: raynas_test_missing: what is lost" in text
    assert "_Throwaway.gone: missing" in text
    assert "raynas_test_fine" not in text
    again = io.StringIO()
    assert check_compat([missing, fine], stream=again) == [missing]  # still missing, not said again
    assert again.getvalue() == ""


def test_a_patch_whose_feature_cannot_apply_keeps_tunes_own_behaviour(monkeypatch):
    gone = _feature("trainable_lookups_cached", Target(f"{__name__}:_Throwaway.gone"))
    monkeypatch.setitem(tune_wall._BY_NAME, "trainable_lookups_cached", gone)
    original = trial_module.get_trainable_cls
    with controller.trainable_lookups_cached():
        assert trial_module.get_trainable_cls is original


def _replaced(owner, names):
    return {name: getattr(owner, name) for name in names}


def test_each_patch_replaces_its_targets_in_its_block_and_restores_them_after(monkeypatch):
    monkeypatch.setattr(workers, "ray_session", lambda: "raynas-test-session")
    local = ("raynas-test-session", {})
    cases = [
        (controller.restore_failure_raised(), TuneController, ["resume"]),
        (controller.trainable_lookups_cached(), trial_module, ["get_trainable_cls", "validate_trainable"]),
        (controller.finished_trials_released(object()), TuneController, ["save_to_dir"]),
        (workers.trial_actors_on_prestarted_workers(local), _ActorClassCache, ["get"]),
        (
            workers.starting_actors_kept_as_spares(local),
            TuneController,
            ["_maybe_reuse_cached_actor", "_actor_started", "_actor_stopped", "_actor_failed", "_cleanup_trials"],
        ),
    ]
    for patch, owner, names in cases:
        before = _replaced(owner, names)
        with patch:
            inside = _replaced(owner, names)
            assert all(inside[n] is not before[n] for n in names), names
        assert _replaced(owner, names) == before, names


def test_the_actor_patches_leave_a_ray_raynas_did_not_start_alone(monkeypatch):
    monkeypatch.setattr(workers, "ray_session", lambda: "raynas-test-session")
    for local in (None, ("another-session", {})):
        before = _ActorClassCache.get, TuneController._actor_started
        with workers.trial_actors_on_prestarted_workers(local), workers.starting_actors_kept_as_spares(local):
            assert (_ActorClassCache.get, TuneController._actor_started) == before


def test_the_runner_enters_every_patch_at_once_and_leaves_none_behind(monkeypatch):
    monkeypatch.setattr(workers, "ray_session", lambda: "raynas-test-session")
    names = ["resume", "save_to_dir", "_maybe_reuse_cached_actor", "_cleanup_trials"]
    before = _replaced(TuneController, names), _ActorClassCache.get, trial_module.get_trainable_cls
    with patched(local=("raynas-test-session", {}), journal=object()):
        assert all(getattr(TuneController, n) is not before[0][n] for n in names)
        assert _ActorClassCache.get is not before[1] and trial_module.get_trainable_cls is not before[2]
    with patched(local=None, journal=object(), release_finished=False):
        assert TuneController.save_to_dir is before[0]["save_to_dir"]  # PBT, PB2: Tune's rule
    assert (_replaced(TuneController, names), _ActorClassCache.get, trial_module.get_trainable_cls) == before


def _private_names() -> set:
    names = set()
    for feature in FEATURES:
        for target in feature.targets:
            module, _, qualname = target.path.partition(":")
            names |= {p for p in [*module.split("."), *qualname.split(".")] if p.startswith("_") and not p.startswith("__")}
            names |= {u for u in target.uses if u.startswith("_")}
    return names


def test_no_module_outside_the_wall_touches_a_private_name_of_ray():
    private = _private_names()
    # Searcher's own attributes, set for its subclasses; and Optuna's study._storage, not Ray's.
    allowed = {"raynas/search/searchers.py": {"_metric", "_mode", "_storage"}}
    found = []
    for path in sorted((ROOT / "raynas").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("raynas/_tune/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray":
                modules = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names if a.name.split(".")[0] == "ray"]
            else:
                modules = []
            for module in modules:
                if any(part.startswith("_") for part in module.split(".")):
                    found.append(f"{rel}:{node.lineno}: imports {module}")
            name = None
            if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                name = node.attr
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
            ):
                name = node.args[1].value
            if name in private and name not in allowed.get(rel, ()):
                found.append(f"{rel}:{node.lineno}: uses {name}")
    assert found == [], "private names of Ray outside raynas/_tune:\n" + "\n".join(found)
