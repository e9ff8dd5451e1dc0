"""Data-parallel training of one trial through Ray Train (``resources.workers_per_trial``).

A one-shot search's supernet is its one long training. With ``workers_per_trial: N`` its Tune
trial becomes a driver that holds :data:`DRIVER_CPUS` of a CPU and launches a Ray Train
``TorchTrainer`` of N workers, each with the trial's ``cpus_per_trial`` and
``gpus_per_trial``, placed by Ray Train across the cluster:

* every worker runs the fast engine's loop (:class:`~raynas.trainables.module.FastLoop`) on
  the same model, seed, batches and paths (the supernet's seeded sampler draws the same path
  on every worker);
* each batch of ``space.train.batch_size`` is split by rows between the workers
  (:class:`ShardedBatches`), and after each backward pass their gradients are summed,
  weighted by their share of the batch (:func:`sync_gradients`, one all-reduce): the step is
  the step of one trainer on the whole batch, so the recipe does not change with N. Batch
  norm's batch statistics are each worker's own (as under PyTorch's DDP); the checkpoint holds
  worker 0's running statistics, which a one-shot search recomputes for each subnet anyway;
* each epoch reports ``workers``, ``worker_nodes`` (the Ray nodes they run on) and
  ``worker_weight_spread`` (the largest difference between the workers' sums of all weights:
  0 while they stay in step);
* worker 0 validates, and sends each epoch's metrics and checkpoint to the driver through a
  Ray queue; the driver reports them to Tune as the fast engine does (the same
  ``state.pt``), so resume, ``raynas analyze`` and the scoring stage see an ordinary trial.
  A resumed trial hands its last checkpoint to the workers through the object store.

A worker that dies fails the Ray Train run and the trial with it; Tune retries the trial
(``trainer.max_failures``) from its last checkpoint, as for any trial.
"""

from __future__ import annotations

import io
import math
import time
from typing import Any

import torch

__all__ = ["DRIVER_CPUS", "ShardedBatches", "run_data_parallel_trial", "sync_gradients", "train_data_parallel"]

#: The CPU the trial's own actor holds while its Ray Train workers train: it only waits.
DRIVER_CPUS = 0.01


class ShardedBatches:
    """One worker's share of each batch of ``batches`` (a :class:`~raynas.trainables.module.TensorBatches`):
    the batch split by rows into ``world`` parts (their sizes differ by one at most), the part
    of ``rank``. All workers walk the same batches in the same order, so together they take
    exactly the batches one trainer would. A batch that would leave a worker fewer than two
    samples (the last, short one) is skipped: batch norm cannot train on one.

    Attributes:
        fraction: This worker's share of the rows of the batch last yielded.
        rows: Rows yielded since :attr:`rows` was last set to 0.

    Example:
        >>> from raynas.trainables.module import TensorBatches
        >>> x, y = torch.arange(10.0).unsqueeze(1), torch.zeros(10, dtype=torch.long)
        >>> [b[0].flatten().tolist() for b in ShardedBatches(TensorBatches(x, y, 5, shuffle=False), 1, 2)]
        [[3.0, 4.0], [8.0, 9.0]]
    """

    def __init__(self, batches, rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world
        self.fraction, self.rows = 1.0, 0

    def __len__(self) -> int:
        full, rest = divmod(len(self.batches.x), self.batches.batch_size)
        usable = self.batches.batch_size >= 2 * self.world
        return full * usable + (rest >= 2 * self.world)

    def __iter__(self):
        for x, y in self.batches:
            if len(y) < 2 * self.world:
                continue
            part_x, part_y = x.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]
            self.fraction = len(part_y) / len(y)
            self.rows += len(part_y)
            yield part_x, part_y


def sync_gradients(module: torch.nn.Module, fraction: float) -> None:
    """Makes every worker's gradients the gradient of the whole batch: each worker's gradient
    (of its mean loss over its rows) weighted by its share of the rows, summed over the workers
    in one all-reduce. Parameters without a gradient (the paths a supernet did not run, the
    same on every worker) are left out."""
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads).mul_(fraction)
    dist.all_reduce(flat)
    for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        grad.copy_(synced)


def _weight_spread(module: torch.nn.Module, device) -> float:
    """How far apart the workers' weights are (the largest difference between their sums of
    all parameters): 0 when gradient averaging keeps them in step, as it should."""
    import torch.distributed as dist

    with torch.no_grad():
        checksum = sum(p.double().sum() for p in module.parameters())
        ends = torch.stack([checksum, -checksum]).to(device)
    dist.all_reduce(ends, op=dist.ReduceOp.MAX)
    return float(ends[0] + ends[1])


def _to_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _worker_loop(cfg: dict) -> None:
    """What each Ray Train worker runs (see the module's docstring)."""
    import ray
    import ray.train
    import torch.distributed as dist

    from raynas.trainables.hparams import TrainParams
    from raynas.trainables.module import FastLoop, FastModule, TensorBatches
    from raynas.trainables.trainable import EPOCH_KEY, GENERATION_KEY, LINEAGE_KEY, _device_tensors, build_trial_model

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    config, job = cfg["config"], cfg["job"]
    threads = job.num_threads or max(1, int(job.cpus))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    reports, acks = cfg["reports"], cfg["acks"]
    if job.gpus > 0 and not torch.cuda.is_available():  # the same on every worker: all stop here
        if rank == 0:
            reports.put(("failed", f"resources.gpus_per_trial is {job.gpus:g} but torch {torch.__version__} on the "
                                   "data-parallel workers sees no CUDA device (install a CUDA build of torch, or set "
                                   "gpus_per_trial: 0)"))
            acks.get()
        return
    device = ray.train.torch.get_device() if job.gpus > 0 else torch.device("cpu")
    data = ray.get(cfg["data"][0])
    hp = TrainParams.from_config(config.get("train"))
    net = build_trial_model(config, job, data)  # seeded: the same initial weights as a one-worker trial
    x_train, y_train, x_val, y_val = _device_tensors(data, device)[:4]
    generator = torch.Generator().manual_seed(int(torch.initial_seed() % (2**31)))
    train_batches = ShardedBatches(TensorBatches(x_train, y_train, hp.batch_size, shuffle=True, generator=generator),
                                   rank, world)
    val_batches = TensorBatches(x_val, y_val, max(hp.batch_size, 1024), shuffle=False)
    module = FastModule(net, hp, max_epochs=job.max_epochs, steps_per_epoch=len(train_batches)).to(device)
    loop = FastLoop(module, train_batches, val_batches, device, job.precision)
    loop.after_backward = lambda: sync_gradients(module, train_batches.fraction)
    start_epoch, lineage, generation = 0, None, 0
    if cfg["state"] is not None:
        state = torch.load(io.BytesIO(ray.get(cfg["state"][0])), map_location="cpu", weights_only=False)
        loop.load_state_dict(state["loop"])
        generator.set_state(state["generator"])
        start_epoch = int(state[EPOCH_KEY])
        lineage, generation = state.get(LINEAGE_KEY), int(state.get(GENERATION_KEY, 0))
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, 0)  # one starting point, whatever each worker's build did
    nodes: list = [None] * world
    dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    for epoch in range(start_epoch + 1, job.max_epochs + 1):
        began = time.perf_counter()
        train_batches.rows = 0
        local_loss = loop.train_epoch()
        total = torch.tensor([local_loss * train_batches.rows, train_batches.rows], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        train_loss = float(total[0] / total[1].clamp(min=1))
        spread = _weight_spread(module, device)
        if not math.isfinite(train_loss):  # every worker sees the same sum: all stop here
            if rank == 0:
                reports.put(("failed", f"training loss became {train_loss} in epoch {epoch} (try a lower train.lr)"))
                acks.get()
            return
        if rank != 0:
            continue  # the others go on to the next epoch and wait for worker 0 in its first all-reduce
        val_loss, val_acc = loop.validate()
        metrics = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_acc": val_acc, "lr": loop.lr,
                   "epoch_time_s": time.perf_counter() - began, "workers": world,
                   "worker_nodes": len(set(nodes)), "worker_weight_spread": spread}
        save = epoch == job.max_epochs or (job.checkpoint_every > 0 and epoch % job.checkpoint_every == 0)
        state = None
        if save:
            state = ray.put(_to_bytes({EPOCH_KEY: epoch, LINEAGE_KEY: lineage, GENERATION_KEY: generation,
                                       "train_loss": train_loss, "loop": loop.state_dict(),
                                       "generator": generator.get_state()}))
        reports.put(("epoch", metrics, None if state is None else [state]))
        acks.get()  # the driver holds the checkpoint now: this worker's copy may go


def run_data_parallel_trial(config: dict, job: Any, data: Any = None) -> None:
    """Entry point of a data-parallel trial (the runner's for ``workers_per_trial > 1``): as
    :func:`raynas.trainables.trainable.run_trial` for the built-in trainable, then the workers."""
    from raynas.experiment import ORIGIN_KEY
    from raynas.trainables.trainable import announce_trial, prepare_builtin

    announce_trial()
    config = {k: v for k, v in config.items() if k != ORIGIN_KEY}  # the searcher's note, not a setting
    prepared = prepare_builtin(config, job, data)
    if prepared is not None:
        train_data_parallel(config, job, data, prepared[2])


def train_data_parallel(config: dict, job: Any, data: Any, stats: dict) -> None:
    """The trial's side: runs ``job.workers`` Ray Train workers on ``config`` and reports what
    worker 0 sends (with ``stats``, the model's params, FLOPs and latency) to Tune.

    Raises:
        RuntimeError: The Ray Train run failed (a worker raised or died); Tune retries the
            trial from its last checkpoint.
    """
    import os
    import shutil
    import tempfile
    import threading

    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from raynas.search.oneshot import TRAIN_V2_ENV
    from raynas.trainables.trainable import CHECKPOINT_FILE, _latest_checkpoint, report_failure, report_with_checkpoint

    # The spec check sees the driver's environment only; a cluster node's may differ.
    if ".v2." not in TorchTrainer.__module__:
        raise RuntimeError(f"data-parallel workers need Ray Train V2, but {TRAIN_V2_ENV} turns it off on the node of "
                           f"this trial ({TorchTrainer.__module__}); unset it in the cluster's environment")
    _, state = _latest_checkpoint()
    reports, acks = Queue(actor_options={"num_cpus": 0}), Queue(actor_options={"num_cpus": 0})
    resources = {"CPU": job.cpus, **({"GPU": job.gpus} if job.gpus > 0 else {})}
    # Object refs inside lists stay refs: the workers fetch them, the controller does not.
    cfg = {"config": config, "job": job, "data": [ray.put(data)], "reports": reports, "acks": acks,
           "state": None if state is None else [ray.put(_to_bytes(state))]}
    # Ray Train keeps its run state here; the checkpoints go to Tune through the driver.
    storage = tempfile.mkdtemp(prefix="raynas-train-")
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=job.workers, use_gpu=job.gpus > 0, resources_per_worker=resources),
        run_config=RunConfig(name="supernet", storage_path=storage, failure_config=FailureConfig(max_failures=0)),
    )
    outcome: dict = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # noqa: BLE001 - handed to the trial's thread, which raises it
            outcome["error"] = err
        finally:
            reports.put(("done",))

    thread = threading.Thread(target=fit, name="raynas-ray-train", daemon=True)
    thread.start()
    try:
        while True:
            item = reports.get()
            if item[0] == "done":
                break
            if item[0] == "failed":
                report_failure(item[1], **stats)
            else:
                metrics, blob = item[1], item[2]
                payload = None if blob is None else ray.get(blob[0])

                def write(folder: str, payload: bytes = payload) -> None:
                    with open(os.path.join(folder, CHECKPOINT_FILE), "wb") as f:
                        f.write(payload)

                report_with_checkpoint({**metrics, **stats}, None if payload is None else write)
            acks.put(True)
        thread.join()
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    if "error" in outcome:
        err = outcome["error"]
        raise RuntimeError(f"data-parallel training on {job.workers} Ray Train workers failed: "
                           f"{type(err).__name__}: {err}") from err
