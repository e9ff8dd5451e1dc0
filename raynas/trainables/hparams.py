"""Training hyperparameters of the built-in trainable (``space.train``), without importing torch.

Kept apart from the LightningModule so the driver and ``raynas validate`` can check them
without paying for the torch and Lightning imports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "cosine", "step", "onecycle")


@dataclass(frozen=True)
class TrainParams:
    """Hyperparameters the built-in LightningModule understands.

    Attributes:
        lr: Peak learning rate.
        batch_size: Training batch size (validation uses larger batches).
        optimizer: One of ``adam``, ``adamw``, ``sgd``, ``rmsprop``.
        weight_decay: L2 penalty (decoupled for adamw).
        momentum: For sgd and rmsprop.
        nesterov: Nesterov momentum for sgd.
        lr_schedule: ``constant``, ``cosine`` (to 0 over max_epochs), ``step`` (x0.1 at 50%
            and 75% of max_epochs) or ``onecycle``.
        warmup_epochs: Linear warm-up before the schedule (not with onecycle).
        label_smoothing: Cross-entropy label smoothing.
        grad_clip: Clip the gradient norm to this value (None: no clipping).
    """

    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    grad_clip: float | None = None

    @classmethod
    def from_config(cls, train: Mapping[str, Any] | None) -> "TrainParams":
        """Builds and checks the parameters of one sampled configuration.

        Raises:
            ValueError: An unknown key or an out-of-range value (a trial error: the message
                names ``train.<key>`` and the value).
        """
        train = dict(train or {})
        known = {f.name for f in fields(cls)}
        for key in train:
            if key not in known:
                raise ValueError(f"train.{key}: unknown training hyperparameter; known: {', '.join(sorted(known))}")
        params = cls(**train)
        params.check()
        return params

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer: expected one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule: expected one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"train.lr: must be > 0, got {self.lr!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"train.batch_size: must be an integer >= 1, got {self.batch_size!r}")
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay: must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"train.label_smoothing: must be in [0, 1), got {self.label_smoothing!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"train.grad_clip: must be > 0, got {self.grad_clip!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"train.warmup_epochs: must be >= 0, got {self.warmup_epochs!r}")

    def to_dict(self) -> dict:
        return asdict(self)
