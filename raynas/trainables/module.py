"""The LightningModule every built-in trial trains, and the lean loop that drives it.

:class:`ClassificationModule` is an ordinary LightningModule (use it with ``pl.Trainer``
after a search, e.g. to fine-tune the winner). During a search the default ``fast`` engine
(:class:`FastLoop`) calls the same hooks (``configure_optimizers``, ``training_step``,
``validation_step``) without the Trainer's per-step machinery, which on small models costs
more than the model itself (the README's Training section has the figure).

The hooks live in :class:`ClassificationHooks`; the fast engine runs them on a plain
``nn.Module`` (:class:`FastModule`), so a worker that never uses the Trainer never imports
Lightning (1.5-3 s per worker on 2 cores). ``ClassificationModule`` is created on first use
for the same reason.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from raynas.trainables.hparams import TrainParams

__all__ = ["ClassificationModule", "ClassificationHooks", "FastModule", "FastLoop", "TensorBatches", "lr_factor"]


def lr_factor(params: TrainParams, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (warm-up, then the schedule)."""
    warmup = params.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if params.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if params.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if params.lr_schedule == "step":
        return 0.1 ** sum(progress >= m for m in (0.5, 0.75))
    # onecycle: 30% linear ramp from lr/25 to lr, then cosine down to lr/1e4.
    if progress < 0.3:
        return 0.04 + 0.96 * progress / 0.3
    tail = (progress - 0.3) / 0.7
    return 1e-4 + (1 - 1e-4) * 0.5 * (1.0 + math.cos(math.pi * tail))


class ClassificationHooks:
    """Cross-entropy classification of a network built from an architecture dict: the hooks
    both engines call (mixed into :class:`ClassificationModule` and :class:`FastModule`).

    Args:
        net: The model (from a family builder).
        train: Training hyperparameters (``space.train`` of one configuration).
        max_epochs: Length of the run, for learning-rate schedules.
        steps_per_epoch: Optimizer steps per epoch, for per-step schedules.
    """

    def __init__(
        self,
        net: nn.Module,
        train: Mapping[str, Any] | TrainParams | None = None,
        max_epochs: int = 10,
        steps_per_epoch: int = 1,
    ):
        super().__init__()
        self.net = net
        self.hp = train if isinstance(train, TrainParams) else TrainParams.from_config(train)
        self.max_epochs = max_epochs
        self.steps_per_epoch = max(1, steps_per_epoch)

    def _logging(self) -> bool:
        return getattr(self, "_trainer", None) is not None  # under a Lightning Trainer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y, label_smoothing=self.hp.label_smoothing)
        if self._logging():
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx: int) -> dict:
        x, y = batch
        logits = self.net(x)
        loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
        correct = (logits.argmax(dim=1) == y).sum()
        if self._logging():
            n = len(y)
            self.log("val_loss", loss_sum / n, on_epoch=True, batch_size=n)
            self.log("val_acc", correct.float() / n, on_epoch=True, batch_size=n)
        return {"loss_sum": loss_sum, "correct": correct, "count": len(y)}

    def configure_optimizers(self):
        hp = self.hp
        params = self.parameters()
        if hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        elif hp.optimizer == "sgd":
            opt = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov and hp.momentum > 0,
                weight_decay=hp.weight_decay,
            )
        else:
            opt = torch.optim.RMSprop(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "constant" and hp.warmup_epochs == 0:
            return opt
        total = self.max_epochs * self.steps_per_epoch
        spe = self.steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(hp, step, total, spe))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class FastModule(ClassificationHooks, nn.Module):
    """The hooks on a plain ``nn.Module``: what the fast engine trains (no Lightning import)."""


def _lightning_module() -> type:
    import pytorch_lightning as pl

    class ClassificationModule(ClassificationHooks, pl.LightningModule):
        """Cross-entropy classification of a network built from an architecture dict, as a
        LightningModule (arguments as :class:`ClassificationHooks`).

        Example:
            >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
            >>> module = ClassificationModule(net, {"lr": 0.01, "optimizer": "sgd"}, max_epochs=3)
            >>> trainer = pl.Trainer(max_epochs=3, logger=False)  # doctest: +SKIP
        """

    ClassificationModule.__module__ = __name__
    ClassificationModule.__qualname__ = "ClassificationModule"  # picklable as a module attribute
    return ClassificationModule


def __getattr__(name: str) -> Any:
    # ClassificationModule imports Lightning: built on first use, then an ordinary attribute.
    if name == "ClassificationModule":
        cls = globals()["ClassificationModule"] = _lightning_module()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TensorBatches:
    """Mini-batches sliced from tensors already on the training device.

    Much cheaper than a ``DataLoader`` over a ``TensorDataset`` (no per-sample indexing,
    no collation), which matters when an epoch takes milliseconds. A last batch of a single
    sample is dropped in training (batch norm cannot train on one sample).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, generator: torch.Generator | None = None):
        self.x, self.y, self.batch_size, self.shuffle, self.generator = x, y, batch_size, shuffle, generator

    def __len__(self) -> int:
        n = len(self.x)
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest > 1 or (rest == 1 and not self.shuffle) else 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.x.device)
            for i in range(len(self)):
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield self.x[idx], self.y[idx]
        else:
            for i in range(0, n, self.batch_size):
                yield self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]


class FastLoop:
    """Trains a :class:`ClassificationModule` epoch by epoch with its own hooks.

    Args:
        module: The LightningModule (already on ``device``).
        train_batches: Training batches (see :class:`TensorBatches`).
        val_batches: Validation batches.
        device: Where the module and batches live.
        precision: ``32``, ``bf16-mixed`` or ``16-mixed`` (autocast; fp16 uses a grad scaler).
    """

    def __init__(self, module: ClassificationHooks, train_batches, val_batches, device: torch.device, precision: str = "32"):
        self.module, self.train_batches, self.val_batches, self.device = module, train_batches, val_batches, device
        configured = module.configure_optimizers()
        if isinstance(configured, dict):
            self.optimizer = configured["optimizer"]
            self.scheduler = configured["lr_scheduler"]["scheduler"]
        else:
            self.optimizer, self.scheduler = configured, None
        self.autocast_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
        self.grad_clip = module.hp.grad_clip
        #: Called after each backward pass, before clipping and the step (data-parallel
        #: training averages the workers' gradients there, :mod:`raynas.trainables.parallel`).
        self.after_backward: Callable[[], None] | None = None

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def train_epoch(self) -> float:
        """One pass over the training batches; returns the mean training loss."""
        module, opt = self.module, self.optimizer
        module.train()
        total = torch.zeros((), device=self.device)
        count = 0
        for batch_idx, (x, y) in enumerate(self.train_batches):
            with self._autocast():
                loss = module.training_step((x, y), batch_idx)
            opt.zero_grad(set_to_none=True)
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            if self.after_backward is not None:
                self.after_backward()
            if self.scaler is not None:
                if self.grad_clip:
                    self.scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(module.parameters(), self.grad_clip)
                self.scaler.step(opt)
                self.scaler.update()
            else:
                if self.grad_clip:
                    nn.utils.clip_grad_norm_(module.parameters(), self.grad_clip)
                opt.step()
            if self.scheduler is not None:
                self.scheduler.step()
            # Accumulate on the device: one host sync per epoch, not per step.
            total += loss.detach().float() * len(y)
            count += len(y)
        return (total / max(1, count)).item()

    def validate(self) -> tuple[float, float]:
        """Returns (mean validation loss, validation accuracy)."""
        return self.evaluate(self.val_batches)

    @torch.no_grad()
    def evaluate(self, batches) -> tuple[float, float]:
        """Returns (mean loss, accuracy) over ``batches`` (the module's validation step)."""
        module = self.module
        module.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        count = 0
        for batch_idx, batch in enumerate(batches):
            with self._autocast():
                out = module.validation_step(batch, batch_idx)
            loss_sum += out["loss_sum"].float()
            correct += out["correct"]
            count += out["count"]
        count = max(1, count)
        return (loss_sum / count).item(), (correct.float() / count).item()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        """Loads a checkpoint, then applies this loop's hyperparameters on top of it.

        The optimizer's saved state carries the learning rate, weight decay and momentum it
        was saved with; after PBT copies another trial's checkpoint and perturbs the
        hyperparameters, the perturbed ones must be the ones that train.
        """
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self._apply_hyperparameters()

    def _apply_hyperparameters(self) -> None:
        hp, module = self.module.hp, self.module
        for group in self.optimizer.param_groups:
            group["initial_lr"] = hp.lr
            if "weight_decay" in group:
                group["weight_decay"] = hp.weight_decay
            if "momentum" in group and hp.optimizer in ("sgd", "rmsprop"):
                group["momentum"] = hp.momentum
        factor = 1.0
        if self.scheduler is not None:
            self.scheduler.base_lrs = [hp.lr] * len(self.optimizer.param_groups)
            total = module.max_epochs * module.steps_per_epoch
            factor = lr_factor(hp, self.scheduler.last_epoch, total, module.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = hp.lr * factor
