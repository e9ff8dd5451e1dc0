"""Start or join Ray, build the Tuner from a validated spec, run it, resume it.

The driver stays light: it never imports torch or Lightning (the trainable is referenced
by name and runs on workers), loads the data once, and puts it in the object store, so
every trial on a node reads the same copy.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Sequence

import yaml

from raynas import __version__
from raynas import _tune
from raynas._imports import WORKER_PATH_ENV, is_reference, module_file
from raynas._tune.patches import patched
from raynas._tune.workers import quiet_ray_logs, ray_session
from raynas.spec import ExperimentSpec, spec_from_dict
from raynas.errors import ConfigError, ResumeError, SearchFailedError
from raynas.experiment import (
    DATA_FILE,
    META_FILE,
    SPEC_FILE,
    SUPERNET_DIR,
    SUPERNET_STRATEGIES,
    RunStatus,
    run_status,
    is_experiment_dir,
    read_meta,
    update_meta,
    write_json_atomic,
)

log = logging.getLogger("raynas")

# Driver-side Tune settings, applied before Tune is imported.
_DRIVER_ENV = {
    # raynas writes the per-trial result logs itself (see raynas.callbacks).
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # A trial that cannot train reports raynas_status=failed without the objective metric.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Snapshots after each checkpoint are deliberate (they make resume exact); no warning.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}
# Worker-side: keep the working directory (paths in experiments are resolved up front), and
# Tune's own default for its trial actors (Lightning must not fork inside a Ray worker).
_WORKER_ENV = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "PL_DISABLE_FORK": "1"}
# Which local Ray raynas started in this process (its session name), and what its workers
# inherited from the driver; None when raynas joined a Ray (a cluster's or the caller's).
# Kept for the process: a later run that joins this Ray hands it to the actor patches too.
_local_ray: tuple[str | None, dict[str, str]] | None = None


@dataclass
class RunOptions:
    """How to run (not what): where results go, which cluster, what to show.

    Attributes:
        name: Experiment name (defaults to the spec's).
        storage_path: Parent folder of the experiment folder (default ``./raynas_results``).
        address: Ray cluster to join (``auto`` or ``host:port``); None starts a local Ray.
        dashboard: Start Ray's dashboard on 127.0.0.1 (needs ``raynas[dashboard]``).
        progress: Show the trial table.
        stream: Where the table goes (stdout).
        verbose: Keep Ray's and Tune's warnings.
        num_cpus: CPUs of a local Ray (default: all of this machine).
        metrics: Export each trial's metrics through Ray's metrics API (:mod:`raynas.metrics`).
        stop: Extra stopping rule, anything Ray Tune's ``RunConfig(stop=...)`` takes (a
            ``tune.Stopper``, a dict of metric limits, a function); a search it ends early is
            recorded as interrupted. None: the search ends when its trials do.
        report: Keep ``report.html`` in the experiment folder fresh while the search runs
            (needs ``raynas[report]``; without it the run says so once and goes on).
    """

    name: str | None = None
    storage_path: str | None = None
    address: str | None = None
    dashboard: bool = False
    progress: bool = True
    stream: IO[str] | None = None
    verbose: bool = False
    num_cpus: int | None = None
    stop: Any = None
    metrics: bool = True
    report: bool = True


def _options(opts: RunOptions | None, options: dict) -> RunOptions:
    from dataclasses import replace

    return replace(opts or RunOptions(), **options)


def experiment_dir(spec: ExperimentSpec, opts: RunOptions) -> Path:
    storage = opts.storage_path or spec.storage_path or "raynas_results"
    return Path(storage).expanduser().resolve() / (opts.name or spec.name)


def run(
    spec: ExperimentSpec | str | os.PathLike,
    opts: RunOptions | None = None,
    overrides: Sequence[str] = (),
    **options,
) -> Path:
    """Runs a new experiment; returns its folder.

    Args:
        spec: A validated spec, or the path of an experiment file.
        opts: How to run (results folder, cluster, progress); keyword ``options`` set the
            same fields (``raynas.run("x.yaml", storage_path="/tmp/r", progress=False)``).
        overrides: ``key.path=value`` strings applied to a file before validation.

    Raises:
        ConfigError: The results folder exists already (use :func:`resume`), the data
            cannot be read, or the cluster cannot satisfy the resources.
    """
    if not isinstance(spec, ExperimentSpec):
        from raynas.spec import load_spec

        spec = load_spec(spec, overrides)
    opts = _options(opts, options)
    exp_dir = experiment_dir(spec, opts)
    dataset = preflight(spec)  # the file's own errors first
    priors, warm_lines, earlier_states = warm_priors(spec)
    if exp_dir.exists():
        raise ConfigError(
            "",
            f"the results folder {exp_dir} exists already; continue it with `raynas resume {exp_dir}`, "
            "or choose another --name or --storage-path",
            spec.source_file,
        )
    exp_dir.mkdir(parents=True)
    with open(exp_dir / SPEC_FILE, "w", encoding="utf-8") as f:
        f.write(f"# raynas {__version__}: the effective experiment (after --set overrides)\n")
        yaml.safe_dump(spec.to_raw(), f, sort_keys=False)
    if dataset is not None:
        write_json_atomic(exp_dir / DATA_FILE, dataset.info())
    update_meta(
        exp_dir,
        format=1,
        name=exp_dir.name,
        raynas=__version__,
        source_file=spec.source_file,
        base_dir=spec.base_dir,
        overrides=list(overrides),
        num_trials=spec.num_trials,
        created=time.time(),
        status=RunStatus.RUNNING.value,
        host=platform.node(),
    )
    for line in warm_lines:
        print(f"raynas: {line}", file=opts.stream or sys.stdout, flush=True)
    if spec.search.strategy in SUPERNET_STRATEGIES and spec.retrain is None:
        return _one_shot(spec, opts, exp_dir, dataset, restore=False, warm=(priors, earlier_states))
    return _execute(spec, opts, exp_dir, dataset, restore=False, warm=(priors, earlier_states))


def resume(exp_dir: str | os.PathLike, opts: RunOptions | None = None, **options) -> Path:
    """Continues an interrupted experiment: unfinished trials go on from their checkpoints,
    finished ones are kept, and the search stops at the configured number of trials. An
    experiment that finished already is left as it is (Ray is not started).

    Raises:
        ConfigError: ``exp_dir`` is not a raynas experiment folder, or its spec no longer
            validates (e.g. a user module next to the experiment file was removed).
    """
    opts = _options(opts, options)
    exp_dir = Path(exp_dir).expanduser().resolve()
    if not is_experiment_dir(exp_dir):
        raise ConfigError("", f"{exp_dir} is not a raynas experiment folder (no {META_FILE} in it)")
    meta = read_meta(exp_dir)
    with open(exp_dir / SPEC_FILE, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    one_shot = isinstance(raw, dict) and isinstance(raw.get("search"), dict) \
        and raw["search"].get("strategy") in SUPERNET_STRATEGIES and raw.get("retrain") is None
    started = (exp_dir / "tuner.pkl").exists()
    if not started and not one_shot:
        raise ConfigError(
            "", f"{exp_dir} has no Ray Tune state to resume (the run stopped before its first trial started); "
            "delete the folder and run the experiment again"
        )
    if run_status(exp_dir) is RunStatus.FINISHED:
        log.warning("raynas: %s finished already; nothing to resume (rank it with raynas analyze %s)", exp_dir, exp_dir)
        return exp_dir
    from raynas.durable import restore_state_backup

    if started:
        restore_state_backup(str(exp_dir))
    spec = spec_from_dict(raw, file=str(exp_dir / SPEC_FILE), base_dir=meta.get("base_dir"))
    dataset = preflight(spec)
    update_meta(exp_dir, status=RunStatus.RUNNING.value, resumed=time.time())
    opts.name = exp_dir.name
    try:
        if one_shot:
            return _one_shot(spec, opts, exp_dir, dataset, restore=started)
        return _execute(spec, opts, exp_dir, dataset, restore=True)
    except ResumeError:
        update_meta(exp_dir, status=meta.get("status", RunStatus.INTERRUPTED.value))
        raise


def preflight(spec: ExperimentSpec, notes: list[str] | None = None):
    """Checks that need the data, before Ray starts: loads it, builds a few sampled
    architectures of a built-in family against it, and refuses a budget no architecture of
    the space can meet. Returns the dataset (None without ``data``).

    Args:
        notes: Receives warnings (sampled architectures that do not fit the data); without
            it they are logged.

    Raises:
        ConfigError: The data cannot be read, a sampled architecture is not accepted by its
            family, or the budget is impossible.
    """
    dataset = _load_data(spec)
    if dataset is not None and spec.model:
        from raynas.trainables.archcheck import check_architectures

        shape, classes = tuple(dataset.input_shape), int(dataset.num_classes)
        if spec.search.strategy in SUPERNET_STRATEGIES and spec.retrain is None:
            # First: the sampled architectures below are built for real, the supernet is not.
            from raynas.trainables.supernet_memory import check_supernet_memory

            note = check_supernet_memory(spec, shape, classes, len(dataset.x_train))
            if note and notes is None:
                log.warning("raynas: warning: %s", note)
            elif note:
                notes.append(note)
        found = check_architectures(spec, shape, classes)
        if notes is None:
            for note in found:
                log.warning("raynas: warning: %s", note)
        else:
            notes.extend(found)
        if spec.constraints:
            from raynas.trainables.budget import check_budget

            check_budget(spec, shape, classes)
    return dataset


def warm_priors(spec: ExperimentSpec) -> tuple[list, list[str], list[dict]]:
    """The earlier trials ``search.warm_start`` names, a line per folder saying what was used,
    and the earlier searcher states of the same kind (read before Ray starts: a bad folder is a
    ConfigError)."""
    if not spec.search.warm_start or spec.retrain is not None:
        return [], [], []
    from raynas.search.warm import load_priors

    return load_priors(spec)


def _load_data(spec: ExperimentSpec):
    if spec.data is None:
        return None
    from raynas.trainables.data import load_dataset

    d = spec.data
    try:
        dataset = load_dataset(
            d.source,
            path=d.path,
            val_fraction=d.val_fraction,
            seed=d.seed,
            target=d.target,
            download=d.download,
            max_samples=d.max_samples,
            params=d.params,
            base_dir=spec.base_dir,
            test_fraction=d.test_fraction,
        )
    except ConfigError as err:
        raise err.with_file(spec.source_file) from None
    except (OSError, ValueError, TypeError, KeyError, ImportError) as err:
        raise ConfigError("data", f"cannot load the {d.source!r} data: {type(err).__name__}: {err}", spec.source_file) from None
    # A token per load lets workers cache device tensors across the trials they run.
    dataset.token = uuid.uuid4().hex
    return dataset


def _user_modules(spec: ExperimentSpec) -> list[str]:
    """Files or packages next to the experiment file that trials import (shipped to workers)."""
    refs = [spec.model, spec.trainable, spec.data.source if spec.data else None]
    found = {module_file(r, spec.base_dir) for r in refs if r and is_reference(r)}
    return sorted(p for p in found if p)


def _init_ray(spec: ExperimentSpec, opts: RunOptions) -> bool:
    """Starts or joins Ray; returns False when Ray was already initialised by the caller.

    A local Ray gets no job ``runtime_env``: its workers inherit the driver's environment
    (set here first) and import the modules next to the experiment file from their folder
    (:mod:`raynas._worker_path`), and a job without a runtime environment lets the trial
    actors take the workers Ray prestarts for the driver (see
    :func:`raynas._tune.workers.trial_actors_on_prestarted_workers`). Those workers import
    what a trial of a built-in model family needs while the driver sets the search up
    (:mod:`raynas.trainables.warm`). A cluster gets the modules shipped as ``py_modules``.
    """
    global _local_ray
    import ray

    for key, value in {**_DRIVER_ENV, **_WORKER_ENV}.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        # The caller's Ray (a notebook, a test session): its runtime environment stands, so
        # modules next to the experiment file must already be importable on its workers.
        return False
    modules = _user_modules(spec)
    local = not opts.address
    runtime_env: dict = {}
    if not local:
        # Workers of a cluster do not inherit this process's environment, nor see its files.
        if modules:
            runtime_env["py_modules"] = modules
        runtime_env["env_vars"] = {key: os.environ[key] for key in _WORKER_ENV}
    kwargs: dict = dict(
        log_to_driver=opts.verbose,
        logging_level=logging.INFO if opts.verbose else logging.WARNING,
        include_dashboard=opts.dashboard,
    )
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    if opts.dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    if opts.address:
        kwargs["address"] = opts.address
    else:
        kwargs["num_cpus"] = opts.num_cpus or os.cpu_count()
        # Ray starts its workers at niceness 15, below every ordinary process; in a Ray
        # that raynas starts those workers are the trials, the work the user is waiting
        # for, and any other busy process starves them (docs/benchmarks.md, worker priority).
        system = kwargs["_system_config"] = {
            "worker_niceness": 0,
            # Ray ends idle workers it counts as surplus, and a prestarted worker that warms
            # up early is idle until Tune asks for its first actor: Ray would end it and start
            # a cold one. Workers of a raynas run are its trial actors; they end with them.
            "kill_idle_workers_interval_ms": 0,
        }
        preload = worker_preload_modules(spec)
        # The modules next to the experiment file are imported from where they are (the
        # workers run here), not shipped: see raynas/_worker_path.py.
        os.environ.pop(WORKER_PATH_ENV, None)
        if modules:
            os.environ[WORKER_PATH_ENV] = os.pathsep.join(sorted({os.path.dirname(m) for m in modules}))
            preload = ["raynas._worker_path", *preload]
        if preload:
            system["preload_python_modules"] = preload
    if not opts.verbose:
        quiet_ray_logs()
    inherited = dict(os.environ)  # what the processes of a local Ray start with
    context = ray.init(**kwargs)
    _local_ray = (ray_session(), inherited) if local else None
    if opts.dashboard:
        print(dashboard_note(getattr(context, "dashboard_url", None)), file=opts.stream or sys.stdout, flush=True)
    return True


def worker_preload_modules(spec: ExperimentSpec) -> list[str]:
    """Modules each worker of a local Ray imports as it starts, before it takes a trial.

    Only for raynas's built-in training on CPUs (a user trainable's imports are its own, and
    a GPU worker must not import torch before Ray gives it its devices).
    """
    if spec.trainable or not spec.model or spec.resources.gpus_per_trial > 0:
        return []
    modules = ["raynas.trainables.warm"]
    if spec.resources.workers_per_trial > 1:
        # Ray Train's controller and workers import ray.train as they start; beside the warm-up
        # thread's imports of Tune that can meet ray.train half imported (a circular import),
        # so it is imported first, whole (0.4 s per worker).
        modules.insert(0, "ray.train")
    if spec.trainer.engine.value == "lightning":
        modules.append("pytorch_lightning")
    return modules


def dashboard_note(url: str | None) -> str:
    """The dashboard's address, and how to sign in when Ray's token authentication is on."""
    if not url:
        return "Ray dashboard: not available (see Ray's logs with --verbose)"
    note = f"Ray dashboard: http://{url}"
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        # Ray >= 2.5x turns token authentication on for new local clusters.
        note += " (sign in with the token in ~/.ray/auth_token; `ray get-auth-token` prints it)"
    return note


def _check_resources(spec: ExperimentSpec) -> int:
    """Concurrent trials the cluster can hold; raises when a single trial cannot fit."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
    res = spec.resources
    if res.workers_per_trial > 1:
        from raynas.trainables.parallel import DRIVER_CPUS

        # Ray Train's workers take a placement group of their own beside the trial's driver;
        # one that cannot be placed would wait for ever.
        n = res.workers_per_trial
        need_cpus, need_gpus = n * res.cpus_per_trial + DRIVER_CPUS, n * res.gpus_per_trial
        if need_cpus > cpus or need_gpus > gpus:
            raise ConfigError(
                "resources.workers_per_trial",
                f"{n} data-parallel workers of {res.cpus_per_trial:g} CPUs and {res.gpus_per_trial:g} GPUs each, and "
                f"{DRIVER_CPUS:g} CPU for their driver, need {need_cpus:g} CPUs and {need_gpus:g} GPUs; the Ray "
                f"cluster has {cpus:g} and {gpus:g}",
                spec.source_file,
            )
        return 1
    if res.cpus_per_trial > cpus:
        raise ConfigError(
            "resources.cpus_per_trial",
            f"a trial asks for {res.cpus_per_trial:g} CPUs but the Ray cluster has {cpus:g}",
            spec.source_file,
        )
    if res.gpus_per_trial > gpus:
        raise ConfigError(
            "resources.gpus_per_trial",
            f"a trial asks for {res.gpus_per_trial:g} GPUs but the Ray cluster has {gpus:g}"
            + ("; set gpus_per_trial: 0 to train on CPUs" if gpus == 0 else ""),
            spec.source_file,
        )
    slots = int(cpus // res.cpus_per_trial)
    if res.gpus_per_trial > 0:
        slots = min(slots, int(gpus // res.gpus_per_trial))
    return max(1, slots)


#: What the trainable of folders written before trainables were named after their experiment
#: was called (Tune restores a folder only with the trainable name it was written with).
_LEGACY_TRAINABLE_NAME = "run_trial"


def trainable_name(experiment: str) -> str:
    """The trial actors' name in Ray's dashboard (their repr): ``raynas_<experiment>``."""
    return "raynas_" + "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)


def _job(spec: ExperimentSpec):
    """What every trial of ``spec`` needs besides its config and data."""
    from raynas.trainables.registry import resolve_family
    from raynas.trainables.trainable import TrialJob

    return TrialJob(
        # Resolved here: a family registered in this process reaches workers by value.
        model=resolve_family(spec.model) if spec.model else None,
        base_dir=spec.base_dir,
        max_epochs=spec.max_epochs,
        metric=spec.objective.metric,
        mode=spec.objective.mode.value,
        cpus=spec.resources.cpus_per_trial,
        gpus=spec.resources.gpus_per_trial,
        engine=spec.trainer.engine.value,
        precision=spec.trainer.precision,
        checkpoint_every=spec.trainer.checkpoint_every,
        num_threads=spec.trainer.num_threads,
        seed=spec.search.seed or 0,
        trainable=spec.trainable,
        params=dict(spec.trainable_params),
        constraints=dataclasses.asdict(spec.constraints),
        proxies=tuple(spec.proxies),
        extra={"test": True, "full_data": spec.retrain.full_data} if spec.retrain is not None else {},
        workers=spec.resources.workers_per_trial,
    )


def _trainable(spec: ExperimentSpec, dataset, name: str = _LEGACY_TRAINABLE_NAME):
    from ray import tune

    from raynas.trainables.trainable import run_trial

    job = _job(spec)
    if dataset is not None and spec.retrain is None:
        dataset = dataset.without_test()  # the search never sees the test split
    entry = run_trial
    if job.workers > 1:
        from raynas.trainables.parallel import run_data_parallel_trial as entry
    fn = tune.with_parameters(entry, job=job, data=dataset)
    # Tune names the trial actors (their class's repr in Ray's dashboard) and registers the
    # trainable after the function; the tasks they run name each trial (_tune.workers).
    fn.__name__ = name
    resources = {"cpu": spec.resources.cpus_per_trial}
    if spec.resources.workers_per_trial > 1:
        from raynas.trainables.parallel import DRIVER_CPUS

        # The trial only drives its Ray Train workers, which hold the CPUs and GPUs.
        return tune.with_resources(fn, {"cpu": DRIVER_CPUS})
    if spec.resources.gpus_per_trial:
        resources["gpu"] = spec.resources.gpus_per_trial
    return tune.with_resources(fn, resources)


def _execute(spec: ExperimentSpec, opts: RunOptions, exp_dir: Path, dataset, restore: bool, warm=None) -> Path:
    global _local_ray
    import ray

    from raynas.durable import remove_downloaded_raynas_files

    started = _init_ray(spec, opts)
    report = _live_report(exp_dir, opts)
    report.start()  # its process writes the first page while the Tuner is built
    try:
        _tune.check_compat()  # once per process: which of raynas's features this Ray loses
        slots = _check_resources(spec)
        tuner = _build_tuner(spec, opts, exp_dir, dataset, slots, restore, warm)
        journal = _wire(tuner)
        report.announce()
        try:
            with patched(
                local=_local_ray,
                journal=journal,
                on_restored=remove_downloaded_raynas_files,
                # PBT and PB2 read every trial's state from Tune's controller, finished ones too.
                release_finished=not spec.scheduler.population_based,
                label=journal.trial_label if journal is not None else None,
            ):
                tuner.fit()
        except RuntimeError as err:
            # Ray 2.60 builds a ResultGrid after the run and fails on a trial that a `stop`
            # rule ended before it started (it has no folder). raynas reads the results
            # folder itself, so the run is complete; anything else is a real error.
            if "without setting `trial_dir_name`" not in str(err):
                raise
        except KeyboardInterrupt:
            update_meta(exp_dir, status=RunStatus.INTERRUPTED.value)
            raise
        records = _records(exp_dir)
        status = RunStatus.FINISHED if _all_done(records, spec) else RunStatus.INTERRUPTED
        update_meta(exp_dir, status=status.value, finished=time.time())
        if status is RunStatus.FINISHED and not any(r.best is not None for r in records):
            from raynas.analysis import load_results

            summary = load_results(exp_dir).failure_summary()
            if summary:
                raise SearchFailedError(f"{summary}\nResults: {exp_dir}")
    finally:
        report.stop()  # after the run's status is written: the final page says how it ended
        if started:
            _local_ray = None
            ray.shutdown()
    return exp_dir


def _one_shot(spec: ExperimentSpec, opts: RunOptions, exp_dir: Path, dataset, restore: bool, warm=None) -> Path:
    """A one-shot or gradient search (:mod:`raynas.search.oneshot`): the supernet stage in
    ``exp_dir/supernet`` (run, or resumed where it stopped), then in ``exp_dir`` the subnets
    scored (one-shot) or the derived cell trained (gradient), on one Ray."""
    global _local_ray
    import ray

    from raynas.search.stages import derived_cell, derived_spec, scoring_spec, supernet_checkpoint, supernet_spec

    stream = opts.stream or sys.stdout
    started = _init_ray(spec, opts)
    try:
        sub_dir = exp_dir / SUPERNET_DIR
        sub_opts = dataclasses.replace(opts, storage_path=str(exp_dir), name=SUPERNET_DIR, stop=None)
        gradient = spec.search.strategy == "gradient"
        if run_status(sub_dir) is not RunStatus.FINISHED:
            epochs = (spec.search.gradient if gradient else spec.search.one_shot)["supernet_epochs"]
            if (sub_dir / "tuner.pkl").exists():
                print(f"raynas: {spec.search.strategy}: resuming the supernet's training ({sub_dir})", file=stream, flush=True)
                resume(sub_dir, sub_opts)
            else:
                if sub_dir.exists():  # stopped before its trial started: nothing to keep
                    import shutil

                    shutil.rmtree(sub_dir)
                print(f"raynas: {spec.search.strategy}: training the supernet for {epochs} epochs ({sub_dir})", file=stream,
                      flush=True)
                run(supernet_spec(spec), sub_opts)
        if gradient:
            arch, row = derived_cell(sub_dir)
            what, free = ("cell", "edges chose skip") if spec.model == "cell" else ("network", "layers chose identity or skip")
            print(f"raynas: gradient: derived the {what} {arch} after {row.get('epoch')} supernet epochs "
                  f"({row.get('skip_edges')} {free}, {row.get('skip_edges_kept')} kept); training it",
                  file=stream, flush=True)
            return _execute(derived_spec(spec, arch, int(row.get('epoch') or 0)), opts, exp_dir, dataset, restore=restore)
        weights = supernet_checkpoint(sub_dir)
        print(f"raynas: one-shot: scoring {spec.num_trials} subnets with the supernet's weights ({weights})",
              file=stream, flush=True)
        return _execute(scoring_spec(spec, weights), opts, exp_dir, dataset, restore=restore, warm=warm)
    finally:
        if started:
            _local_ray = None
            ray.shutdown()


def _live_report(exp_dir: Path, opts: RunOptions):
    """The report that refreshes itself while the search runs, from a process of its own
    (see raynas.analysis.report); off with ``report=False``. It never raises into the run."""
    from raynas.analysis.report import LiveReport

    # Beside the trial table; without it (--quiet, the Python API's progress=False) on stderr,
    # so that a caller's stdout holds only what it prints itself.
    stream = (opts.stream or sys.stdout) if opts.progress else sys.stderr
    return LiveReport(exp_dir, say=lambda line: print(line, file=stream, flush=True), enabled=opts.report)


def _records(exp_dir: Path) -> list:
    from raynas.experiment import Status, read_journal

    return [r for r in read_journal(exp_dir).values() if r.status is not Status.LOST]


def _all_done(records: list, spec: ExperimentSpec) -> bool:
    return len(records) >= spec.num_trials and all(r.status.finished for r in records)


def _max_concurrent(spec: ExperimentSpec, slots: int) -> int | None:
    """Live trials at once: what the user set, else as many as can run.

    Synchronous HyperBand and synchronous PBT/PB2 are the exceptions: they pause trials until
    a whole bracket (the whole population) has reached a milestone, so live (paused) trials
    must be allowed to outnumber the slots; the cluster's resources still bound the running
    ones. Limited to the slots, synchronous PBT would compare trials that never ran together
    (a finished trial sent back to an earlier epoch of one that waited for a slot).
    """
    if spec.search.max_concurrent is not None:
        return spec.search.max_concurrent
    if spec.scheduler.name == "hyperband":
        return None
    if spec.scheduler.synchronous_population:
        return None
    return slots


def _build_tuner(spec: ExperimentSpec, opts: RunOptions, exp_dir: Path, dataset, slots: int, restore: bool, warm=None):
    from ray import tune

    from raynas.callbacks import Journal, JournalFlush, QuietTrialProgress, trial_dirname
    from raynas.metrics import TrialMetrics
    from raynas.durable import DurableScheduler
    from raynas.progress import ProgressView
    from raynas.search.registry import SCHEDULERS, SEARCHERS

    trainable = _trainable(spec, dataset, trainable_name(exp_dir.name))
    if restore:
        try:
            tuner = tune.Tuner.restore(
                str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
            )
        except ValueError as err:
            if "trainable" not in str(err).lower():
                raise
            # A folder whose trainable had the function's own name: Tune restores it only so.
            tuner = tune.Tuner.restore(
                str(exp_dir), trainable=_trainable(spec, dataset), resume_unfinished=True, resume_errored=False,
                restart_errored=False,
            )
        if spec.search.prescreen and spec.retrain is None:
            from raynas._tune.snapshots import tuner_searcher

            _attach_scorer(tuner_searcher(tuner), spec, dataset)
        return tuner
    # The journal and the view rank by the first objective metric; Tune and the scheduler see the
    # metric that drives early stopping (the same one unless there are several objectives).
    metric, mode = spec.objective.metric, spec.objective.mode.value
    view = None
    if opts.progress:
        view = ProgressView(exp_dir.name, metric, mode, spec.num_trials, spec.max_epochs, stream=opts.stream)
    if spec.retrain is not None:
        from raynas.search.searchers import ConfigsSearcher

        searcher = ConfigsSearcher(spec.space, spec.retrain.configs(), metric=spec.objective.metric, mode=spec.objective.mode.value)
    else:
        searcher = SEARCHERS[spec.search.searcher].build(spec)
        # Before Tune pickles the searcher into the folder, so a resume starts from the same state.
        if spec.search.points:
            searcher.add_points(spec.search.points)
        # search.warm_start: earlier trials, and earlier states of this searcher (warm_priors).
        priors, earlier_states = warm or ([], [])
        for earlier in earlier_states:
            line = searcher.adopt(earlier["saved"], same_data=earlier["same_data"], source=earlier["folder"])
            if line:
                print(f"raynas: {line}", file=opts.stream or sys.stdout, flush=True)
        if priors:
            print(f"raynas: {searcher.warm_start(priors)}", file=opts.stream or sys.stdout, flush=True)
        if spec.search.prescreen:
            from raynas.search.prescreen import PrescreenSearcher

            searcher = PrescreenSearcher(searcher, spec.search.prescreen["proxy"], spec.search.prescreen["candidates"])
            _attach_scorer(searcher, spec, dataset)
    scheduler = DurableScheduler(SCHEDULERS[spec.scheduler.name].build(spec), str(exp_dir))
    journal = Journal(str(exp_dir), metric, mode, spec.max_epochs, view=view, objectives=tuple(spec.objective.metrics),
                      scheduler=scheduler)
    family = spec.model or spec.trainable or "trainable"
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=spec.num_trials,
            max_concurrent_trials=_max_concurrent(spec, slots),
            reuse_actors=True,
            metric=spec.scheduler_metric,
            mode=spec.scheduler_mode.value,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=exp_dir.name,
            storage_path=str(exp_dir.parent),
            verbose=0,
            # The journal writes each trial's result.json itself, straight into the results
            # folder (Tune's loggers write to a staging folder copied over later).
            callbacks=[journal, JournalFlush(journal), QuietTrialProgress(), *([TrialMetrics(journal, family)] if opts.metrics else [])],
            stop=opts.stop,
            # Tune deletes old checkpoints before the snapshot that stops referring to them is
            # written; a crash in between leaves a state that cannot be resumed. So Tune keeps
            # them all and the journal prunes at snapshot time (latest, recorded and best stay).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            failure_config=tune.FailureConfig(max_failures=spec.trainer.max_failures),
        ),
    )


def _attach_scorer(searcher, spec: ExperimentSpec, dataset) -> None:
    """Gives a prescreen its scorer: Ray tasks that build candidates' models and score them."""
    from raynas.search.prescreen import PrescreenSearcher, make_scorer

    if not isinstance(searcher, PrescreenSearcher):
        raise ResumeError(f"search.prescreen is set, but the saved search is a {type(searcher).__name__}")
    searcher.attach(make_scorer(_job(spec), dataset.without_test(), spec.search.prescreen["proxy"]))


def _wire(tuner):
    """Hands the run's scheduler to its journal and returns the journal (None where the installed
    Tune hides them). A new run's were handed over where they were built; a resumed run's are
    the objects Tune unpickled from its ``tuner.pkl``, which an earlier raynas wrote unwired."""
    from raynas.callbacks import Journal
    from raynas.durable import DurableScheduler
    from raynas._tune.snapshots import tuner_parts

    scheduler, callbacks = tuner_parts(tuner)
    journal = next((cb for cb in callbacks if isinstance(cb, Journal)), None)
    if journal is not None and isinstance(scheduler, DurableScheduler):
        journal.scheduler = scheduler
    return journal
