"""Every use raynas makes of Ray's and Tune's internals, as named features, and the check that
says, once and loudly, which of them cannot apply on the installed Ray.

raynas depends on Ray Tune's private names (``TuneController``'s attributes, the experiment
checkpoint manager, the actor class cache, HyperBand's brackets, PBT's exploit, ``ray._private``).
Nothing outside this package touches one. Each :class:`Feature` names what it gives a run, why
it needs Tune's internals, what a run loses without it, and the targets it needs (module
attributes, methods with their parameters, attributes a class's own code uses). The patching
ones keep Tune's own behaviour where a target is missing; :func:`check_compat`, called by the
runner before it builds the Tuner, is what says so. ``tests/_tune/test_compat.py`` asserts that
every feature applies on the Ray that pyproject.toml pins.

Importing this package imports no Ray module (trial workers import it too).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable

__all__ = ["Feature", "Target", "FEATURES", "feature", "check_compat", "compat_report"]

log = logging.getLogger("raynas")


@dataclass(frozen=True)
class Target:
    """One thing of Ray a feature needs.

    Attributes:
        path: ``module:Attr.attr``, resolved by importing the module and following the names.
        params: For a callable, the names its parameters must start with (``self`` included).
        uses: For a class, attributes its own code (any function of it or its bases) must use:
            what its ``__init__`` sets and its methods read, without building one.
    """

    path: str
    params: tuple[str, ...] | None = None
    uses: tuple[str, ...] = ()

    def resolve(self) -> Any:
        module_name, _, qualname = self.path.partition(":")
        obj: Any = importlib.import_module(module_name)
        for name in filter(None, qualname.split(".")):
            obj = getattr(obj, name)
        return obj

    def problem(self) -> str | None:
        """What is wrong with this target on the installed Ray; None when it is as expected."""
        try:
            obj = self.resolve()
        except ImportError as err:
            return f"{self.path}: cannot import ({err})"
        except AttributeError:
            return f"{self.path}: missing"
        if self.params is not None:
            try:
                names = tuple(inspect.signature(obj).parameters)
            except (TypeError, ValueError):
                return f"{self.path}: not a function"
            if names[: len(self.params)] != self.params:
                return f"{self.path}: takes ({', '.join(names)}), expected ({', '.join(self.params)}, ...)"
        if self.uses:
            used = _names_used(obj)
            missing = [name for name in self.uses if name not in used and not hasattr(obj, name)]
            if missing:
                return f"{self.path}: no longer uses {', '.join(missing)}"
        return None


def _names_used(cls: Any) -> set[str]:
    """Attribute names the code of ``cls`` and its bases refers to."""
    names: set[str] = set()
    for klass in getattr(cls, "__mro__", (cls,)):
        for value in vars(klass).values():
            func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            stack = [getattr(func, "__code__", None)]
            while stack:
                code = stack.pop()
                if code is None:
                    continue
                names.update(code.co_names)
                stack.extend(c for c in code.co_consts if inspect.iscode(c))
    return names


@dataclass(frozen=True)
class Feature:
    """A behaviour of raynas that needs Ray's or Tune's internals.

    Attributes:
        name: Short name, used in the compatibility warning and in code that asks for it.
        reason: One line: what it does for a run, and why it must reach into Tune.
        lost: What a run loses where it cannot apply.
        targets: What it needs of the installed Ray.
        where: The function or class that uses the targets (``module:name``).
    """

    name: str
    reason: str
    lost: str
    targets: tuple[Target, ...]
    where: str = ""

    @cached_property
    def _found(self) -> list[str]:
        return [p for p in (t.problem() for t in self.targets) if p]

    def problems(self) -> list[str]:
        """Every target that is missing or changed on the installed Ray (checked once)."""
        return self._found

    def applies(self) -> bool:
        return not self.problems()


_CONTROLLER = "ray.tune.execution.tune_controller:TuneController"
_CHECKPOINT_MANAGER = "ray.tune.execution.experiment_state:_ExperimentCheckpointManager"
_HYPERBAND = "ray.tune.schedulers.hyperband:HyperBandScheduler"
_BRACKET = "ray.tune.schedulers.hyperband:_Bracket"
_PBT = "ray.tune.schedulers.pbt:PopulationBasedTraining"

FEATURES: tuple[Feature, ...] = (
    Feature(
        "restore_failure_raised",
        "Tune's controller catches a failed restore of its state and starts the search over; raynas stops the resume",
        "a resume whose saved state cannot be restored starts the whole search again in the same folder",
        (Target(f"{_CONTROLLER}.resume", ("self", "resume_config")), Target(_CONTROLLER, uses=("_storage",))),
        "raynas._tune.controller:restore_failure_raised",
    ),
    Feature(
        "trainable_lookups_cached",
        "Tune looks each trial's trainable up in the GCS and unpickles it several times per trial; once per run is enough",
        "driver time: two GCS round trips and an unpickling per lookup, several lookups per trial",
        (
            Target("ray.tune.experiment.trial:get_trainable_cls", ("trainable_name",)),
            Target("ray.tune.experiment.trial:validate_trainable", ("trainable_name",)),
        ),
        "raynas._tune.controller:trainable_lookups_cached",
    ),
    Feature(
        "trial_actors_on_prestarted_workers",
        "Tune registers trial actors with a runtime_env of their own, so they never take the workers Ray prestarted",
        "worker reuse: each trial actor waits for a new worker process instead of a prestarted, warmed-up one",
        (
            Target("ray.tune.execution.class_cache:_ActorClassCache.get", ("self", "trainable_cls")),
            Target("ray.tune.execution.class_cache:_ActorClassCache", uses=("_cache",)),
            Target("ray.actor:ActorClass", uses=("_default_options",)),
            Target("ray._private.worker:_global_node"),
        ),
        "raynas._tune.workers:trial_actors_on_prestarted_workers",
    ),
    Feature(
        "starting_actors_kept_as_spares",
        "Tune ends a trial's starting actor when a reused one frees up first; raynas keeps it for the next trial",
        "parallel short trials: one actor can end up running every trial, one at a time",
        (
            Target(f"{_CONTROLLER}._maybe_reuse_cached_actor", ("self", "trial")),
            Target(f"{_CONTROLLER}._actor_started", ("self", "tracked_actor")),
            Target(f"{_CONTROLLER}._actor_stopped", ("self", "tracked_actor")),
            Target(f"{_CONTROLLER}._actor_failed", ("self", "tracked_actor", "exception")),
            Target(f"{_CONTROLLER}._cleanup_trials", ("self",)),
            Target(f"{_CONTROLLER}._remove_actor", ("self", "tracked_actor")),
            Target(
                _CONTROLLER,
                uses=("_trial_to_actor", "_actor_to_trial", "_resetting_trials", "_started_actors", "_actor_manager", "_actor_cache"),
            ),
            Target("ray.air.execution._internal.actor_manager:RayActorManager.is_actor_started", ("self", "tracked_actor")),
            Target("ray.air.execution._internal.actor_manager:RayActorManager.clear_actor_task_futures", ("self", "tracked_actor")),
            Target("ray.air.execution._internal.actor_manager:RayActorManager.remove_actor", ("self", "tracked_actor", "kill")),
            Target("ray.air.execution._internal.tracked_actor:TrackedActor.set_on_stop", ("self", "on_stop")),
            Target("ray.air.execution._internal.tracked_actor:TrackedActor.set_on_error", ("self", "on_error")),
            Target("ray.tune.execution.tune_controller:_ObjectCache.has_cached_object", ("self", "key")),
            Target("ray.tune.execution.tune_controller:_ObjectCache.cache_object", ("self", "key", "obj")),
            Target("ray._private.worker:_global_node"),
        ),
        "raynas._tune.workers:starting_actors_kept_as_spares",
    ),
    Feature(
        "trial_tasks_named",
        "Ray names an actor's tasks after the repr it took when the actor was created, and Tune reuses trial actors",
        "Ray's dashboard (Tasks, Logs) shows every trial's tasks as `run_trial.train`: nothing says which trial runs where",
        (
            Target(f"{_CONTROLLER}._schedule_trial_task", ("self", "trial", "method_name")),
            Target(_CONTROLLER, uses=("_trial_to_actor",)),
            Target("ray.air.execution._internal.actor_manager:RayActorManager._schedule_tracked_actor_task",
                   ("self", "tracked_actor_task", "method_name")),
            Target("ray.air.execution._internal.actor_manager:RayActorManager", uses=("_live_actors_to_ray_actors_resources",)),
            Target("ray.air.execution._internal.tracked_actor_task:TrackedActorTask", uses=("_tracked_actor",)),
        ),
        "raynas._tune.workers:trial_tasks_named",
    ),
    Feature(
        "trial_named_in_worker_logs",
        "Ray's log monitor prefixes a worker's lines with the name it last read from Ray's private log tokens",
        "with --verbose, a trial's printed lines are prefixed `(run_trial pid=...)` instead of the trial's name",
        (Target("ray._private.ray_constants:LOG_PREFIX_ACTOR_NAME"), Target("ray._private.ray_constants:LOG_PREFIX_TASK_NAME")),
        "raynas._tune.workers:log_name_tokens",
    ),
    Feature(
        "finished_trials_released",
        "Tune keeps every trial in its controller and its snapshots until the run ends; finished ones are let go",
        "flat driver memory: it grows with every trial run, and so does each experiment snapshot",
        (
            Target(f"{_CONTROLLER}.save_to_dir", ("self",)),
            Target(
                _CONTROLLER,
                uses=("_trials", "_stopped_trials", "_failed_trials", "_trial_metadata", "_trials_to_cache", "_trial_to_actor"),
            ),
        ),
        "raynas._tune.controller:finished_trials_released",
    ),
    Feature(
        "encoder_log_keys_forgotten",
        "Tune's JSON encoder leaves a log-once key per pickled object of every trial in Ray's set",
        "driver memory: a few keys of 50-200 characters per trial, for the whole run",
        (Target("ray.util.debug:_logged"),),
        "raynas._tune.controller:forget_encoded_objects",
    ),
    Feature(
        "metric_statistics_forgotten",
        "Tune keeps running statistics of every numeric result key of every trial, in memory and in every snapshot",
        "flat driver memory and snapshot size: they grow with every numeric key of every finished trial",
        (Target("ray.tune.trainable.metadata:_TrainingRunMetadata", uses=("metric_analysis", "metric_n_steps", "invalidate_cache")),),
        "raynas._tune.controller:forget_metric_statistics",
    ),
    Feature(
        "quiet_progress_callback",
        "Tune adds its own progress callback unless one is given, and it keeps every trial's last result",
        "driver memory: Tune's progress callback holds every trial it saw until the run ends",
        (
            Target("ray.tune.progress_reporter:TrialProgressCallback"),
            Target("ray.tune.utils.callback:_create_default_callbacks", ("callbacks",)),
        ),
        "raynas.callbacks:QuietTrialProgress",
    ),
    Feature(
        "snapshots_on_trial_events",
        "Tune writes its experiment state every 10 s or so; raynas forces one after trial events, paced and when settled",
        "exact resume: a crash repeats or loses the trials created or finished since Tune's last periodic snapshot",
        (
            Target(_CONTROLLER, uses=("_checkpoint_manager", "_cached_trial_decisions", "_live_trials")),
            Target(f"{_CHECKPOINT_MANAGER}.sync_up_experiment_state", ("self", "save_fn", "force", "wait")),
            Target(_CHECKPOINT_MANAGER, uses=("_should_force_sync_up", "_last_save_time", "_checkpoint_period")),
            Target("ray.tune.execution.tune_controller:TrialRunnerWrapper", uses=("_tune_controller",)),
        ),
        "raynas._tune.snapshots:Snapshots",
    ),
    Feature(
        "trial_states_restored",
        "Tune restores paused trials as PENDING and skips stopped PAUSED trials in its snapshots",
        "exact resume: a trial paused at a HyperBand milestone trains on past it, and one stopped while paused runs again",
        (
            Target(f"{_CONTROLLER}._set_trial_status", ("self", "trial", "status")),
            Target(f"{_CONTROLLER}._mark_trial_to_checkpoint", ("self", "trial")),
        ),
        "raynas._tune.snapshots:set_trial_status",
    ),
    Feature(
        "staging_folders_removed",
        "Tune makes a staging folder per trial and copies the whole staging tree at every snapshot",
        "driver time: each snapshot walks one empty folder per trial ever run",
        (Target("ray.train._internal.syncer:_BackgroundSyncer", uses=("_sync_process",)),),
        "raynas._tune.snapshots:sync_running",
    ),
    Feature(
        "run_objects_wired",
        "the runner reaches the journal and scheduler a Tuner runs with (for a resume, the ones Tune unpickled) to wire them",
        "finished trials are not released (see finished_trials_released), and a resume of an experiment "
        "started by an older raynas gets no paced snapshots nor saved scheduler state",
        (
            Target("ray.tune:Tuner", uses=("_local_tuner",)),
            Target("ray.tune.impl.tuner_internal:TunerInternal", uses=("_tune_config", "_run_config")),
        ),
        "raynas._tune.snapshots:tuner_parts",
    ),
    Feature(
        "own_checkpoints_found",
        "a trial resumes from the newest checkpoint in its folder, read through Tune's (v1) session storage",
        "exact resume: a trial resumes from the checkpoint Tune's last snapshot recorded, repeating later epochs",
        (
            Target("ray.train._internal.session:get_storage", ()),
            Target("ray.train._internal.storage:StorageContext", uses=("storage_filesystem", "trial_fs_path")),
        ),
        "raynas._tune.workers:trial_storage",
    ),
    Feature(
        "hyperband_waits_for_its_bracket",
        "Tune's HyperBand halves a bracket before all its trials exist and can hang on a pause in flight; raynas overrides its hooks",
        "synchronous HyperBand compares trials by machine load (brackets halved short) and can hang with a trial PAUSED",
        (
            Target(f"{_HYPERBAND}._process_bracket", ("self", "tune_controller", "bracket")),
            Target(f"{_HYPERBAND}._create_bracket", ("self", "s")),
            Target(_HYPERBAND, uses=("_state", "_time_attr", "_max_t_attr", "_eta", "_stop_last_trials", "_get_n0", "_get_r0")),
            Target(f"{_BRACKET}.__init__", ("self", "time_attr", "max_trials", "init_t_attr", "max_t_attr", "eta", "s", "stop_last_trials")),
            Target(f"{_BRACKET}.cleanup_full", ("self", "tune_controller")),
            Target(_BRACKET, uses=("_halves",)),
        ),
        "raynas._tune.schedulers:HyperBandScheduler",
    ),
    Feature(
        "pbt_exploit_snapshot",
        "after PBT copies another trial's config, the experiment state must say so before the trial checkpoints",
        "exact resume of PBT/PB2: a crash after an exploit can rebuild the old architecture and load weights that do not fit",
        (Target(f"{_PBT}._exploit", ("self", "tune_controller", "trial", "trial_to_clone")),),
        "raynas._tune.schedulers:RaynasPBT",
    ),
    Feature(
        "population_checkpoints_kept",
        "PBT and PB2 may hand a trial's checkpoint from its last perturbation to another trial later",
        "PBT/PB2: checkpoints a later exploit needs can be pruned",
        (Target(_PBT, uses=("_trial_state",)), Target("ray.tune.schedulers.pbt:_PBTTrialState", uses=("last_checkpoint",))),
        "raynas._tune.schedulers:population_checkpoints",
    ),
    Feature(
        "searcher_metric_attributes",
        "raynas's searchers read the metric and mode Tune sets through Searcher's _metric and _mode",
        "raynas's searchers cannot learn which metric to optimise",
        (Target("ray.tune.search:Searcher", uses=("_metric", "_mode")),),
        "raynas.search.searchers:SpaceSearcher",
    ),
    Feature(
        "quiet_ray_logs",
        "Ray's token-authentication notice and Tune's traceback of each failed trial are logged by "
        "private modules; raynas prints a summary of the errors instead",
        "the notice and every failed trial's traceback are printed over the trial table",
        (Target("ray._private.authentication.authentication_token_setup:logger"),
         Target(f"{_CONTROLLER}._trial_task_failure", ("self", "trial", "exception"))),
        "raynas._tune.workers:quiet_ray_logs",
    ),
    Feature(
        "dashboard_dependency_check",
        "`raynas run --dashboard` fails before Ray starts when the dashboard's packages are missing, by Ray's own test",
        "--dashboard checks a fixed list of packages instead of Ray's own test",
        (Target("ray._private.utils:get_dashboard_dependency_error", ()),),
        "raynas._tune.workers:dashboard_dependency_error",
    ),
)

_BY_NAME = {f.name: f for f in FEATURES}


def feature(name: str) -> Feature:
    return _BY_NAME[name]


def compat_report(features: Iterable[Feature]) -> str:
    """The warning for features that cannot apply: each one's name, what is lost, and why."""
    version = getattr(sys.modules.get("ray"), "__version__", "unknown")
    lines = [
        f"raynas: warning: on Ray {version} (raynas is tested with the Ray its pyproject.toml pins), "
        "these features cannot apply; the run goes on without them:"
    ]
    for f in features:
        lines.append(f"  - {f.name}: lost: {f.lost}")
        lines.extend(f"      ({problem})" for problem in f.problems())
    return "\n".join(lines)


_reported: set[str] = set()  # features already reported by this process


def check_compat(features: Iterable[Feature] = FEATURES, stream: Any = None) -> list[Feature]:
    """Returns the features that cannot apply on the installed Ray, and reports them on
    ``stream`` (stderr) once per process: a feature already reported is not reported again."""
    missing = [f for f in features if not f.applies()]
    new = [f for f in missing if f.name not in _reported]
    if new:
        _reported.update(f.name for f in new)
        text = compat_report(new)
        log.debug(text)
        print(text, file=stream or sys.stderr, flush=True)
    return missing
