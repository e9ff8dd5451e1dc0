"""The Ray Tune trainable: one sampled configuration -> a trained, reported, checkpointed model.

This is the only module that talks to ``tune.report``. It is imported by reference in the
driver (cloudpickle stores the function by name) and only executed on workers, so the
driver never pays for importing torch and Lightning.

Per epoch a trial reports ``epoch, train_loss, val_loss, val_acc, lr, epoch_time_s`` and
the per-trial ``params, flops, latency_ms`` (and the zero-cost proxies the experiment lists,
computed once before training), with a checkpoint (model, optimizer, schedule,
epoch) so that a resumed or retried trial continues where it stopped. A trial that cannot
train (an architecture that does not fit the data, bad hyperparameters, a non-finite loss)
reports ``raynas_status: failed`` with ``raynas_error`` and ends normally: the search goes
on, and the worker process is kept for the next trial instead of being replaced.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Callable, Sequence

from raynas.experiment import BUDGETS, ERROR_KEY, EXPLOITED_KEY, ORIGIN_KEY, STATUS_KEY

CHECKPOINT_FILE = "state.pt"
EPOCH_KEY = "raynas_epoch"  # epochs completed when a checkpoint was taken (both engines)
LINEAGE_KEY = "raynas_lineage"  # the other trial's checkpoint this state descends from (PBT), or None
GENERATION_KEY = "raynas_generation"  # how many exploits (PBT) the trial had made when the state was saved


@dataclass
class TrialJob:
    """Everything a trial needs besides its config and data (small and picklable).

    Attributes:
        model: Family name or ``package.module:function``.
        base_dir: Folder of the experiment file (user modules live there).
        max_epochs: Epochs per trial.
        metric: Objective metric (for the user trainable context).
        mode: ``max`` or ``min``.
        cpus: CPUs per trial (torch threads follow it).
        gpus: GPUs per trial (fractional allowed; 0 trains on CPU).
        engine: ``fast`` (lean loop over the module's hooks) or ``lightning`` (pl.Trainer).
        precision: ``32``, ``bf16-mixed`` or ``16-mixed``.
        checkpoint_every: Write a checkpoint every N epochs (0: never; the last epoch always).
        num_threads: Torch threads (defaults to ``cpus``).
        seed: Experiment seed, mixed with the config into each trial's torch seed.
        trainable: A user ``package.module:function`` replacing the built-in training.
        constraints: Budgets (``max_params``, ``max_flops``, ``max_latency_ms``; None: no limit).
        proxies: Zero-cost proxies to compute before training (``raynas.trainables.proxies``),
            each reported as a metric; empty: none (nothing is computed).
        extra: ``{"test": True}`` for a retrain (score the test split after the last epoch),
            with ``"full_data"`` (train on train + validation).
        workers: Ray Train workers that train the model data-parallel (each with ``cpus``
            and ``gpus``; :mod:`raynas.trainables.parallel`); 1: the trial trains it itself.
    """

    model: str | None = "mlp"
    base_dir: str | None = None
    max_epochs: int = 10
    metric: str = "val_acc"
    mode: str = "max"
    cpus: float = 1.0
    gpus: float = 0.0
    engine: str = "fast"
    precision: str = "32"
    checkpoint_every: int = 1
    num_threads: int | None = None
    seed: int = 0
    trainable: str | None = None
    constraints: dict = field(default_factory=dict)
    proxies: tuple = ()
    extra: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    workers: int = 1


@dataclass
class TrialContext(Mapping):
    """Passed to a user trainable that accepts a second argument; read it as an object
    (``context.max_epochs``) or as a read-only mapping (``context["max_epochs"]``, ``dict(context)``).

    Attributes:
        max_epochs: Epochs the experiment asks for.
        metric: Objective metric name (report it with ``tune.report``).
        mode: ``max`` or ``min``.
        data: The experiment's :class:`~raynas.trainables.data.Dataset` if ``data`` is set.
        seed: A seed derived from the experiment seed and this config.
        params: ``trainable.params`` from the experiment file (checked by the trainable's
            ``validate_params`` hook, if it has one).
        checkpoint_every: ``trainer.checkpoint_every`` (0: checkpoint only the last epoch).
    """

    max_epochs: int
    metric: str
    mode: str
    data: Any = None
    seed: int = 0
    params: dict = field(default_factory=dict)
    checkpoint_every: int = 1

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)


def trial_seed(config: dict, seed: int) -> int:
    """Deterministic per-config seed: the same configuration always starts from the same weights."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).digest()
    return (int.from_bytes(digest[:4], "little") ^ (seed * 2654435761)) % (2**31 - 1)


def _resolve(ref: str | Callable, base_dir: str | None) -> Callable:
    """Loads a ``module:function`` on a worker.

    A module the worker can already import comes first (shipped to a cluster as
    ``runtime_env`` ``py_modules``, or on a local Ray that raynas started found in its folder,
    see :mod:`raynas._worker_path`); the experiment's folder is the fallback for a Ray the
    caller started.
    """
    from raynas._imports import load_reference

    if callable(ref):
        return ref
    try:
        return load_reference(ref, None)
    except ImportError:
        return load_reference(ref, base_dir if base_dir and os.path.isdir(base_dir) else None)


def announce_trial() -> str:
    """Writes to the worker's log which trial starts in it, and returns its name.

    Trial actors are reused, so the lines a worker prints belong to whichever trial it runs
    then; this line (and Ray's log tokens, which make ``--verbose`` prefix the lines that
    follow with the trial's name) tells them apart in Ray's Logs view. The trial's number is
    the driver's (it is in the names of the trial's tasks, see ``Journal.trial_label``).
    """
    from ray import tune

    from raynas._tune.workers import log_name_tokens

    context = tune.get_context()
    name = f"{context.get_experiment_name()} {context.get_trial_id()}"
    print(f"{log_name_tokens(name)}raynas: trial {context.get_trial_id()} of {context.get_experiment_name()} starts",
          flush=True)
    return name


def run_trial(config: dict, job: TrialJob, data: Any = None) -> None:
    """Entry point of every trial (wrapped by :func:`raynas.runner` with ``tune.with_parameters``)."""
    announce_trial()
    config = {k: v for k, v in config.items() if k != ORIGIN_KEY}  # the searcher's note, not a setting
    if job.trainable:
        fn = _resolve(job.trainable, job.base_dir)
        try:
            takes_context = len(inspect.signature(fn).parameters) >= 2
        except (TypeError, ValueError):
            takes_context = False
        if takes_context:
            ctx = TrialContext(job.max_epochs, job.metric, job.mode, data, trial_seed(config, job.seed),
                               dict(job.params), job.checkpoint_every)
            return fn(config, ctx)
        return fn(config)
    return _train_builtin(config, job, data)


def report_failure(message: str, **extra: Any) -> None:
    """Fails the trial as a result (``raynas_status: failed``), not an exception, so Ray keeps its actor."""
    from ray import tune

    tune.report({STATUS_KEY: "failed", ERROR_KEY: message, **extra})


def prepare_builtin(config: dict, job: TrialJob, data: Any):
    """What a built-in trial does before training: torch's threads, the GPU check, the model
    built and measured (``params``, ``flops``, ``latency_ms``), the budgets, the zero-cost
    proxies. Returns ``(hp, net, stats, device)``, or None when the trial has already reported
    (it failed, or a budget rejected its model). A data-parallel trial (``job.workers > 1``) only
    drives its workers, which hold the GPUs: it builds and measures on its CPU.
    """
    import torch
    from ray import tune

    from raynas.errors import ArchError
    from raynas.trainables.families import count_flops, count_params, measure_latency_ms
    from raynas.trainables.hparams import TrainParams

    threads = job.num_threads or max(1, int(job.cpus))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if job.gpus > 0 and job.workers == 1 and not torch.cuda.is_available():
        # Ray placed the trial on a GPU, but this torch cannot see one (a CPU build?): say so
        # instead of training on the CPU unnoticed.
        report_failure(
            f"resources.gpus_per_trial is {job.gpus:g} but torch {torch.__version__} on this worker "
            "sees no CUDA device (install a CUDA build of torch, or set gpus_per_trial: 0)"
        )
        return None
    device = torch.device("cuda" if job.gpus > 0 and job.workers == 1 else "cpu")
    try:
        hp = TrainParams.from_config(config.get("train"))
        net = build_trial_model(config, job, data)
    except (ArchError, ValueError, TypeError) as err:
        report_failure(f"{type(err).__name__}: {err}")
        return None

    stats = {
        "params": count_params(net),
        "flops": count_flops(net, tuple(data.input_shape)),
        "latency_ms": measure_latency_ms(net, tuple(data.input_shape)),
    }
    rejected = over_budget(stats, job.constraints)
    if rejected:
        tune.report(rejected)  # measured and refused before any training: it costs no epochs
        return None
    if job.proxies:
        # After the budget check (a rejected architecture costs nothing more); on a copy of the
        # net with the RNG restored, so training goes exactly as without them.
        from raynas.trainables.proxies import BATCH_SIZE, batch, compute

        x, y = batch(data, BATCH_SIZE, job.seed)  # the same batch for every trial
        stats.update(compute(net, x.to(device), y.to(device), job.proxies, seed=job.seed))
    return hp, net, stats, device


def _train_builtin(config: dict, job: TrialJob, data: Any) -> None:
    import torch

    prepared = prepare_builtin(config, job, data)
    if prepared is None:
        return None
    hp, net, stats, device = prepared
    tensors = _device_tensors(data, device)
    if hasattr(net, "set_arch_data"):
        # Gradient search (DARTS): a seeded half of the training split teaches the architecture
        # and the other half the weights, as DARTS splits its training data.
        order = torch.randperm(len(tensors[1]), generator=torch.Generator().manual_seed(job.seed))
        half, arch_half = order[: len(order) // 2].to(device), order[len(order) // 2:].to(device)
        net.set_arch_data(tensors[0][arch_half], tensors[1][arch_half], hp.batch_size)
        tensors = (tensors[0][half], tensors[1][half], *tensors[2:])
    if job.extra.get("full_data"):
        tensors = (torch.cat([tensors[0], tensors[2]]), torch.cat([tensors[1], tensors[3]]), *tensors[2:])
    if job.extra.get("test"):  # a retrain says what it trained on (no cost to a search's trials)
        stats["train_samples"] = len(tensors[0])
    if job.engine == "lightning":
        return _train_with_lightning(net, hp, tensors, job, device, stats)
    return _train_fast(net, hp, tensors, job, device, stats)


def checkpoint_weights(folder) -> tuple[dict, int | None]:
    """The network's state dict (``net.`` prefix removed) and the epoch of a built-in checkpoint
    folder (the fast engine's or Lightning's).

    Raises:
        ConfigError: The folder holds neither.
    """
    from pathlib import Path

    import torch

    from raynas.errors import ConfigError

    folder = Path(folder)
    fast, lightning = folder / CHECKPOINT_FILE, folder / "lightning.ckpt"
    if fast.is_file():
        state = torch.load(fast, map_location="cpu", weights_only=False)
        module, epoch = state["loop"]["module"], state.get(EPOCH_KEY)
    elif lightning.is_file():
        state = torch.load(lightning, map_location="cpu", weights_only=False)
        module, epoch = state["state_dict"], state.get(EPOCH_KEY, state.get("epoch"))
    else:
        raise ConfigError("--trial", f"{folder} holds no raynas checkpoint ({CHECKPOINT_FILE} or lightning.ckpt)")
    return {k[len("net."):]: v for k, v in module.items() if k.startswith("net.")}, epoch


def over_budget(stats: dict, constraints: dict) -> dict | None:
    """The result that rejects an architecture whose measured ``stats`` break a budget of
    ``constraints`` (``max_params``, ...); None when it keeps to all of them."""
    if not constraints:
        return None
    from raynas.spec import Constraints

    over = Constraints(**constraints).violations(stats)
    if not over:
        return None
    why = "; ".join(f"{m} {stats[m]:,.4g} > max_{m} {constraints[f'max_{m}']:,}" for m in over)
    return {STATUS_KEY: "rejected", ERROR_KEY: f"over budget: {why}", **stats,
            "raynas_violation": [over.get(m, 0.0) for m in BUDGETS]}


def build_trial_model(config: dict, job: TrialJob, data: Any):
    """The untrained model of a configuration, as its trial builds it: the global torch RNG
    seeded with the trial's seed (:func:`trial_seed`), then the family's module for the
    config's ``arch`` and the data's input shape and classes.

    Raises:
        ArchError: The architecture does not build for the data.
    """
    import torch

    from raynas.trainables.families import build_model

    from raynas.trainables.registry import resolve_family

    torch.manual_seed(trial_seed(config, job.seed))
    # The driver resolved names to references; a caller's TrialJob may still hold a name.
    family = _resolve(resolve_family(job.model), job.base_dir)
    return build_model(family, config.get("arch", {}), tuple(data.input_shape), int(data.num_classes))


def score_config(config: dict, job: Any, data: Any, names: Sequence[str], *,
                 timings: dict[str, float] | None = None, notes: dict[str, str] | None = None) -> dict[str, float]:
    """The zero-cost proxies (:mod:`raynas.trainables.proxies`) of one configuration, with no
    training: the model is built exactly as the trial would build it (:func:`build_trial_model`: family, arch,
    input shape, classes, the trial's seed), on the batch the trial would use.

    Args:
        config: A sampled configuration (``{"arch": {...}, "train": {...}}``).
        job: The experiment's :class:`TrialJob` (its seed and model).
        data: The experiment's dataset.
        names: Proxies to compute.
        timings, notes: As for :func:`raynas.trainables.proxies.compute`.

    Raises:
        ArchError: The architecture does not build for the data.
    """
    import torch

    from raynas.trainables.proxies import BATCH_SIZE, batch, compute

    with torch.random.fork_rng(devices=[]):  # the caller's RNG is not moved by the model's init
        net = build_trial_model(config, job, data)
    x, y = batch(data, BATCH_SIZE, job.seed)
    return compute(net, x, y, names, seed=job.seed, timings=timings, notes=notes)


def score_candidate(config: dict, job: Any, data: Any, proxy: str) -> float:
    """One prescreen candidate's score (``search.prescreen``), run as a Ray task on a worker:
    NaN when its model does not build or the proxy fails, so that it never wins."""
    import math

    import torch

    from raynas.errors import ArchError

    torch.set_num_threads(1)  # the task reserves no CPU: it shares the worker's with the trials
    try:
        return float(score_config(config, job, data, [proxy])[proxy])
    except (ArchError, ValueError, TypeError, RuntimeError):
        return math.nan


_TENSOR_CACHE: dict = {}


def _device_tensors(data: Any, device) -> tuple:
    """The dataset as tensors on ``device``, cached per worker process (actors are reused)."""
    import torch

    key = (getattr(data, "token", None) or id(data), str(device))
    cached = _TENSOR_CACHE.get(key)
    if cached is None:
        _TENSOR_CACHE.clear()  # one dataset per experiment; do not hold on to old ones
        # The arrays come zero-copy (read-only) from the object store; torch needs writable
        # memory only if it writes, and it never does here, so share the buffer on CPU.
        as_tensor = lambda a, dt: torch.as_tensor(a, dtype=dt).to(device)  # noqa: E731
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "non-writable array" notice
            cached = (
                as_tensor(data.x_train, torch.float32),
                as_tensor(data.y_train, torch.long),
                as_tensor(data.x_val, torch.float32),
                as_tensor(data.y_val, torch.long),
            )
            if getattr(data, "x_test", None) is not None:  # a retrain's data (search trials never get it)
                cached += (as_tensor(data.x_test, torch.float32), as_tensor(data.y_test, torch.long))
        _TENSOR_CACHE[key] = cached
    return cached


def _own_checkpoints() -> tuple[list, int, int]:
    """This trial's checkpoints in its folder; the epoch of the last row of its result log; how
    many rows of that log record an exploit (PBT).

    Looked up in the folder rather than taken from Tune: Tune hands back the checkpoint its
    last experiment snapshot recorded (none, if the snapshot came before the first one was
    registered), while newer ones written before a crash hold later state. The last row, not
    the highest epoch: after an exploit, epochs continue from the other trial's.
    """
    import json
    import posixpath
    import re

    from pyarrow import fs as pafs
    from ray import tune
    from raynas._tune.workers import trial_storage

    storage = trial_storage()
    if storage is None:  # reported by check_compat: Tune's own choice of checkpoint stands
        return [], 0, 0
    fs, trial_path = storage.storage_filesystem, storage.trial_fs_path
    pattern = re.compile(r"checkpoint_(\d+)$")
    try:
        infos = fs.get_file_info(pafs.FileSelector(trial_path))
    except FileNotFoundError:
        return [], 0, 0
    found = [info.path for info in infos if info.type == pafs.FileType.Directory and pattern.search(info.path)]
    logged = exploits = 0
    try:
        with fs.open_input_stream(posixpath.join(trial_path, "result.json")) as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                try:
                    row = json.loads(line)
                    logged = int(row.get("epoch") or 0)
                except (ValueError, AttributeError):
                    continue  # a line cut short by a crash
                exploits += bool(row.get(EXPLOITED_KEY))
    except FileNotFoundError:
        pass
    return [tune.Checkpoint(path, filesystem=fs) for path in found], logged, exploits


def _foreign_source(checkpoint) -> str | None:
    """The trial folder a checkpoint came from, when it is not this trial's (a PBT exploit)."""
    import posixpath

    from ray import tune

    source = posixpath.basename(posixpath.dirname(checkpoint.path.rstrip("/")))
    return source if source != f"trial_{tune.get_context().get_trial_id()}" else None


def _load(candidate, filename: str):
    import torch

    try:
        with candidate.as_directory() as path:
            return torch.load(os.path.join(path, filename), map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a partial checkpoint raises anything from EOF to zip errors
        return None


def _latest_checkpoint(filename: str = CHECKPOINT_FILE):
    """The checkpoint to continue from, and its loaded ``filename``; ``(None, None)`` to start fresh.

    A trial's own checkpoints can be newer than the one Tune's last snapshot recorded (they
    were written before a crash). Among them the trial takes the newest readable one whose
    epoch the result log holds (an unlogged epoch runs again rather than leave a gap) and
    whose lineage is the trial's current one: each checkpoint records the checkpoint of
    another trial it descends from (PBT's exploit, which brings another architecture), so a
    trial never goes back to weights from before an exploit.
    """
    import posixpath

    from ray import tune

    given = tune.get_checkpoint()
    own = f"trial_{tune.get_context().get_trial_id()}"
    foreign = given is not None and posixpath.basename(posixpath.dirname(given.path.rstrip("/"))) != own
    candidates, logged, exploits = _own_checkpoints()
    given_state = _load(given, filename) if given is not None else None
    if given is None:
        lineage = None
    elif foreign:
        lineage = given.path  # exploited: only checkpoints taken since then are newer
    else:
        lineage = given_state.get(LINEAGE_KEY) if given_state is not None else None
    best = None
    for candidate in candidates:
        state = _load(candidate, filename)
        # Logged: its lineage's exploit row and its own epoch are in the log.
        if (
            state is None
            or state.get(LINEAGE_KEY) != lineage
            or int(state.get(GENERATION_KEY, 0)) != exploits
            or int(state.get(EPOCH_KEY, 0)) > logged
        ):
            continue
        if best is None or int(state[EPOCH_KEY]) > int(best[1][EPOCH_KEY]):
            best = (candidate, state)
    if best is not None:
        return best
    if given_state is not None:
        if foreign:
            given_state[LINEAGE_KEY], given_state[GENERATION_KEY] = given.path, exploits + 1
        return given, given_state
    return None, None


def report_with_checkpoint(metrics: dict, write: Callable[[str], None] | None = None) -> None:
    """Reports one result through ``tune.report``; with ``write``, also a checkpoint of the
    files ``write(folder)`` puts into a temporary folder (Tune copies it into the trial's)."""
    from ray import tune

    if write is None:
        tune.report(metrics)
        return
    tmp = tempfile.mkdtemp(prefix="raynas-ckpt-")
    try:
        write(tmp)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _report(metrics: dict, state: dict | None) -> None:
    """Reports one epoch, with a checkpoint of ``state`` when it is given."""
    import torch

    report_with_checkpoint(metrics, None if state is None else lambda folder: torch.save(state, os.path.join(folder, CHECKPOINT_FILE)))


def _train_fast(net, hp, tensors, job: TrialJob, device, stats: dict) -> None:
    import math

    import torch

    from raynas.trainables.module import FastLoop, FastModule, TensorBatches

    x_train, y_train, x_val, y_val = tensors[:4]
    generator = torch.Generator().manual_seed(int(torch.initial_seed() % (2**31)))
    train_batches = TensorBatches(x_train, y_train, hp.batch_size, shuffle=True, generator=generator)
    val_batches = TensorBatches(x_val, y_val, max(hp.batch_size, 1024), shuffle=False)
    module = FastModule(net, hp, max_epochs=job.max_epochs, steps_per_epoch=len(train_batches)).to(device)
    loop = FastLoop(module, train_batches, val_batches, device, job.precision)

    start_epoch = 0
    exploited = lineage = None
    generation = 0
    checkpoint, state = _latest_checkpoint()
    if state is not None:
        loop.load_state_dict(state["loop"])
        generator.set_state(state["generator"])
        start_epoch = int(state[EPOCH_KEY])
        lineage, generation = state.get(LINEAGE_KEY), int(state.get(GENERATION_KEY, 0))
        exploited = _foreign_source(checkpoint)
    if exploited and start_epoch >= job.max_epochs:
        # PBT gave this trial another trial's final checkpoint: nothing is left to train, but
        # the trial now holds that model. It says so once, so its record shows the exploit
        # and the metrics of what it holds, with its own copy of the checkpoint.
        began = time.perf_counter()
        val_loss, val_acc = loop.validate()
        metrics = {"epoch": start_epoch, "val_loss": val_loss, "val_acc": val_acc, "lr": loop.lr,
                   "epoch_time_s": time.perf_counter() - began, EXPLOITED_KEY: exploited, **stats}
        if "train_loss" in state:
            metrics["train_loss"] = state["train_loss"]
        return _report(metrics, state)

    # A model may add metrics of its own to each epoch (a gradient search's derived cell).
    own_metrics = getattr(net, "epoch_metrics", None)
    for epoch in range(start_epoch + 1, job.max_epochs + 1):
        began = time.perf_counter()
        train_loss = loop.train_epoch()
        if not math.isfinite(train_loss):
            return report_failure(f"training loss became {train_loss} in epoch {epoch} (try a lower train.lr)", **stats)
        val_loss, val_acc = loop.validate()
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": loop.lr,
            "epoch_time_s": time.perf_counter() - began,
            **stats,
        }
        if own_metrics is not None:
            metrics.update(own_metrics())
        if exploited:
            metrics[EXPLOITED_KEY], exploited = exploited, None
        last = epoch == job.max_epochs
        if last and job.extra.get("test") and len(tensors) == 6:
            metrics["test_loss"], metrics["test_acc"] = loop.evaluate(
                TensorBatches(tensors[4], tensors[5], max(hp.batch_size, 1024), shuffle=False))
        save = last or (job.checkpoint_every > 0 and epoch % job.checkpoint_every == 0)
        state = {EPOCH_KEY: epoch, LINEAGE_KEY: lineage, GENERATION_KEY: generation, "train_loss": train_loss,
                 "loop": loop.state_dict(), "generator": generator.get_state()}
        _report(metrics, state if save else None)


def _test_scores(module, x, y) -> tuple[float, float]:
    """(loss, accuracy) of ``module`` on the test split, in eval mode (the Lightning engine's)."""
    import torch
    import torch.nn.functional as F

    training = module.training
    module.eval()
    loss = correct = 0.0
    with torch.no_grad():
        for start in range(0, len(x), 1024):
            logits = module(x[start:start + 1024]).float()
            target = y[start:start + 1024]
            loss += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += float((logits.argmax(dim=1) == target).sum())
    module.train(training)
    return loss / max(1, len(x)), correct / max(1, len(x))


def _train_with_lightning(net, hp, tensors, job: TrialJob, device, stats: dict) -> None:
    """The ``lightning`` engine: a real ``pl.Trainer`` reporting through a callback."""
    import logging

    import pytorch_lightning as pl

    from raynas.trainables.module import ClassificationModule, TensorBatches

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    x_train, y_train, x_val, y_val = tensors[:4]
    train_batches = TensorBatches(x_train, y_train, hp.batch_size, shuffle=True)
    val_batches = TensorBatches(x_val, y_val, max(hp.batch_size, 1024), shuffle=False)
    module = ClassificationModule(net, hp, max_epochs=job.max_epochs, steps_per_epoch=len(train_batches))

    class Report(pl.Callback):
        """Reports after validation (Lightning 2 calls on_train_epoch_end after it), so a
        checkpoint taken here records a finished epoch and a resume starts the next one."""

        failed = False

        def on_train_epoch_start(self, trainer, pl_module):
            self.began = time.perf_counter()

        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            checkpoint[EPOCH_KEY] = trainer.current_epoch + 1

        def on_train_epoch_end(self, trainer, pl_module):
            import math

            m = trainer.callback_metrics
            epoch = trainer.current_epoch + 1
            train_loss = float(m.get("train_loss", float("nan")))
            if not math.isfinite(train_loss):
                self.failed = True
                trainer.should_stop = True
                report_failure(f"training loss became {train_loss} in epoch {epoch} (try a lower train.lr)", **stats)
                return
            metrics = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": float(m["val_loss"]),
                "val_acc": float(m["val_acc"]),
                "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
                "epoch_time_s": time.perf_counter() - getattr(self, "began", time.perf_counter()),
                **stats,
            }
            if epoch == job.max_epochs and job.extra.get("test") and len(tensors) == 6:
                metrics["test_loss"], metrics["test_acc"] = _test_scores(pl_module, tensors[4], tensors[5])
            save = epoch == job.max_epochs or (job.checkpoint_every > 0 and epoch % job.checkpoint_every == 0)
            write = (lambda folder: trainer.save_checkpoint(os.path.join(folder, "lightning.ckpt"))) if save else None
            report_with_checkpoint(metrics, write)

    ckpt_path = restore_dir = None
    checkpoint, _ = _latest_checkpoint("lightning.ckpt")  # no PBT lineage: pbt needs the fast engine
    if checkpoint is not None:
        restore_dir = checkpoint.to_directory(tempfile.mkdtemp(prefix="raynas-restore-"))
        ckpt_path = os.path.join(restore_dir, "lightning.ckpt")
    precision = job.precision if job.precision != "32" else "32-true"
    trainer = pl.Trainer(
        max_epochs=job.max_epochs,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Report()],
    )
    try:
        trainer.fit(module, train_batches, val_batches, ckpt_path=ckpt_path)
    finally:
        if restore_dir:
            shutil.rmtree(restore_dir, ignore_errors=True)
