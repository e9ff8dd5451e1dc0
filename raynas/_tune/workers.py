"""Where trial actors run: Ray's prestarted workers, and actors already starting when Tune
would end them. Also the small reads of Ray's internals that trials and the CLI need."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable

from raynas._tune import feature

# A local Ray that raynas started: (its session name, the environment its workers inherited).
LocalRay = tuple  # tuple[str | None, dict[str, str]]


def ray_session() -> str | None:
    """The session name of the Ray this process is connected to (None when unknown)."""
    try:
        import ray._private.worker as ray_worker
    except ImportError:  # reported by check_compat: both actor features name this target
        return None
    return getattr(getattr(ray_worker, "_global_node", None), "session_name", None)


def _is_current(local: LocalRay | None) -> bool:
    """Whether ``local`` is the Ray this process is connected to now."""
    return local is not None and local[0] is not None and local[0] == ray_session()


@contextlib.contextmanager
def trial_actors_on_prestarted_workers(local: LocalRay | None):
    """Lets Tune's trial actors start in the workers Ray prestarted, when that is safe.

    Ray prestarts a Python worker per CPU when a driver connects, but gives one to an actor
    only when their runtime environments match. Tune registers every trainable actor with a
    ``runtime_env`` of its own (environment variables it propagates from the driver, such as
    ``PL_DISABLE_FORK``), so each trial actor waits for a new process and its imports. In a
    local Ray that raynas started without a job runtime environment (``local``, still the
    connected one), the workers inherited the driver's environment, so where every variable
    Tune would set already has that value in them, the actor is registered without one.
    Shown by tests/test_warm_workers.py.
    """
    if not _is_current(local) or not feature("trial_actors_on_prestarted_workers").applies():
        yield
        return
    import ray
    from ray.tune.execution.class_cache import _ActorClassCache

    inherited = local[1]
    original = _ActorClassCache.get

    def get(self, trainable_cls):
        cached = trainable_cls in self._cache
        remote_cls = original(self, trainable_cls)
        if cached:
            return remote_cls
        options = getattr(remote_cls, "_default_options", None) or {}
        env = dict(options.get("runtime_env") or {})
        env_vars = env.pop("env_vars", None) or {}
        if not env and all(inherited.get(key) == value for key, value in env_vars.items()):
            remote_cls = ray.remote(trainable_cls)
            self._cache[trainable_cls] = remote_cls
        return remote_cls

    _ActorClassCache.get = get
    try:
        yield
    finally:
        _ActorClassCache.get = original


@contextlib.contextmanager
def starting_actors_kept_as_spares(local: LocalRay | None):
    """Keeps an actor that is already starting when Tune gives its trial a reused one instead.

    Tune asks for an actor for each pending trial, but when a reused actor frees up first it
    gives that one to the trial and ends the trial's own actor, even one whose process is
    already starting (``TuneController._maybe_reuse_cached_actor``). Trials of a few dozen
    milliseconds free their actor long before a new one is up, so one actor could end up
    running every trial, one at a time, however many slots the run had.

    Here the trial still takes the reused actor at once, but an actor of its own that Ray has
    already placed (its resources held) is kept: when it is up it joins Tune's cache of
    reusable actors, as a trial's actor does when its trial ends, and the cache decides
    whether it is kept for a waiting trial or ended. A request that Ray has not placed yet is
    cancelled as before. Only in the local Ray that raynas started (``local``).
    """
    if not _is_current(local) or not feature("starting_actors_kept_as_spares").applies():
        yield
        return
    from ray.tune.execution.tune_controller import TuneController

    names = ("_maybe_reuse_cached_actor", "_actor_started", "_actor_stopped", "_actor_failed", "_cleanup_trials")
    originals = {name: getattr(TuneController, name) for name in names}
    spares: dict = {}  # tracked actor -> the resource request it was placed for

    def _maybe_reuse_cached_actor(self, trial):
        own = self._trial_to_actor.get(trial)
        if (
            own is not None
            and trial not in self._resetting_trials
            and own not in self._started_actors
            and self._actor_manager.is_actor_started(own)  # placed: its process is starting
            and self._actor_cache.has_cached_object(trial.placement_group_factory)
        ):
            # Detached, so that Tune hands the trial the cached actor without ending this one.
            del self._trial_to_actor[trial]
            del self._actor_to_trial[own]
            spares[own] = trial.placement_group_factory
        return originals["_maybe_reuse_cached_actor"](self, trial)

    def _actor_started(self, tracked_actor, *args, **kwargs):
        request = spares.pop(tracked_actor, None)
        if request is None:
            return originals["_actor_started"](self, tracked_actor, *args, **kwargs)
        self._started_actors.add(tracked_actor)
        if not self._actor_cache.cache_object(request, tracked_actor):
            self._remove_actor(tracked_actor=tracked_actor)

    def _actor_stopped(self, tracked_actor, *args, **kwargs):
        spares.pop(tracked_actor, None)
        return originals["_actor_stopped"](self, tracked_actor, *args, **kwargs)

    def _actor_failed(self, tracked_actor, *args, **kwargs):
        if tracked_actor not in spares:
            return originals["_actor_failed"](self, tracked_actor, *args, **kwargs)
        # A spare that failed as it started belongs to no trial: only clean it up.
        del spares[tracked_actor]
        self._actor_manager.clear_actor_task_futures(tracked_actor)
        tracked_actor.set_on_stop(None)
        tracked_actor.set_on_error(None)
        self._actor_manager.remove_actor(tracked_actor, kill=False)
        return originals["_actor_stopped"](self, tracked_actor)

    def _cleanup_trials(self, *args, **kwargs):
        # Tune's end of run waits (up to 5 s) until every actor it tracks has stopped; a spare
        # still starting is neither a trial's nor a cached actor, so it is removed first.
        for tracked_actor in list(spares):
            del spares[tracked_actor]
            tracked_actor.set_on_stop(None)
            tracked_actor.set_on_error(None)
            self._remove_actor(tracked_actor=tracked_actor)
        return originals["_cleanup_trials"](self, *args, **kwargs)

    replaced = {
        "_maybe_reuse_cached_actor": _maybe_reuse_cached_actor,
        "_actor_started": _actor_started,
        "_actor_stopped": _actor_stopped,
        "_actor_failed": _actor_failed,
        "_cleanup_trials": _cleanup_trials,
    }
    for name, fn in replaced.items():
        setattr(TuneController, name, fn)
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(TuneController, name, fn)


class _NamedTasks:
    """An actor handle whose method calls carry a task name (``<label>.<method>``)."""

    __slots__ = ("_actor", "_label")

    def __init__(self, actor: Any, label: str):
        self._actor, self._label = actor, label

    def __getattr__(self, method: str) -> Any:
        return getattr(self._actor, method).options(name=f"{self._label}.{method}")


@contextlib.contextmanager
def trial_tasks_named(label: Callable[[Any], str] | None):
    """Names each task Tune runs on a trial actor after the trial it runs for.

    Ray's dashboard names an actor task ``<the actor's repr>.<method>``, and the repr is taken
    once, when the actor is created; Tune reuses trial actors, so the Actors, Tasks and Logs
    views cannot tell which trial a reused actor runs. Here every task Tune schedules for a
    trial (``train``, ``save``, ``reset``, ``stop``) is given the name ``label(trial)`` + the
    method, which the Tasks view shows and the task's log and the actor's page list.
    Shown by tests/integration/test_dashboard.py.
    """
    if label is None or not feature("trial_tasks_named").applies():
        yield
        return
    from ray.air.execution._internal.actor_manager import RayActorManager
    from ray.tune.execution.tune_controller import TuneController

    import weakref

    # Tracked actor -> the label of the trial it runs now (gone with the actor).
    labels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    original_schedule = TuneController._schedule_trial_task
    original_submit = RayActorManager._schedule_tracked_actor_task

    def _schedule_trial_task(self, trial, method_name, *args, **kwargs):
        tracked = self._trial_to_actor.get(trial)
        if tracked is not None:
            try:
                labels[tracked] = label(trial)
            except Exception:  # noqa: BLE001 - a name is never worth a trial
                labels.pop(tracked, None)
        return original_schedule(self, trial, method_name, *args, **kwargs)

    def _schedule_tracked_actor_task(self, tracked_actor_task, method_name, **kwargs):
        tracked = tracked_actor_task._tracked_actor
        name = labels.get(tracked)
        live = self._live_actors_to_ray_actors_resources
        entry = live.get(tracked) if name else None
        if entry is None:
            return original_submit(self, tracked_actor_task, method_name, **kwargs)
        # Tune's own code makes the call (`getattr(actor, method).remote(...)`); for that call
        # the handle it looks up names the task.
        live[tracked] = (_NamedTasks(entry[0], name), *entry[1:])
        try:
            return original_submit(self, tracked_actor_task, method_name, **kwargs)
        finally:
            live[tracked] = entry

    TuneController._schedule_trial_task = _schedule_trial_task
    RayActorManager._schedule_tracked_actor_task = _schedule_tracked_actor_task
    try:
        yield
    finally:
        TuneController._schedule_trial_task = original_schedule
        RayActorManager._schedule_tracked_actor_task = original_submit


def log_name_tokens(name: str) -> str:
    """The lines that make Ray's log monitor prefix what a worker prints next with ``name``
    (``(name pid=...)`` instead of the trainable's class), as Ray prints for a new actor."""
    try:
        from ray._private.ray_constants import LOG_PREFIX_ACTOR_NAME, LOG_PREFIX_TASK_NAME
    except ImportError:  # reported by check_compat
        return ""
    return f"{LOG_PREFIX_ACTOR_NAME}{name}\n{LOG_PREFIX_TASK_NAME}{name}\n"


def trial_storage() -> Any:
    """The running trial's storage context (Tune's v1 session, as ``FunctionTrainable`` uses),
    or None where the feature cannot apply."""
    if not feature("own_checkpoints_found").applies():
        return None
    from ray.train._internal.session import get_storage

    return get_storage()


def dashboard_dependency_error() -> Exception | None:
    """Why Ray's dashboard cannot start in this environment (a missing package), or None."""
    if feature("dashboard_dependency_check").applies():
        from ray._private.utils import get_dashboard_dependency_error

        return get_dashboard_dependency_error()
    import importlib.util

    missing = [m for m in ("aiohttp", "aiohttp_cors", "prometheus_client") if importlib.util.find_spec(m) is None]
    return ImportError(", ".join(missing)) if missing else None


_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
_TRIAL_FAILED = "Trial task failed"


class _NoTrialTracebacks(logging.Filter):
    """Drops Tune's traceback of each failed trial: the journal keeps the error, the trial's
    error.txt the traceback, and a search in which every trial failed ends with a summary."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TRIAL_FAILED)


def quiet_ray_logs() -> None:
    """Ray's and Tune's logs stay out of the trial table (the CLI's ``--verbose`` keeps them)."""
    names = ["ray.tune", "ray.train", "ray.air", "ray.data"]
    if feature("quiet_ray_logs").applies():
        names.append(_TOKEN_NOTICE_LOGGER)  # --dashboard prints how to sign in instead
        controller = logging.getLogger("ray.tune.execution.tune_controller")
        if not any(isinstance(f, _NoTrialTracebacks) for f in controller.filters):
            controller.addFilter(_NoTrialTracebacks())
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
