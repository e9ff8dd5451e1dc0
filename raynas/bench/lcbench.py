"""LCBench through the YAHPO Gym ONNX surrogate, read with onnxruntime directly.

The surrogate (Pfisterer et al., 2022) predicts, for an OpenML task, an MLP configuration and
an epoch (1..52), the six LCBench outputs ``time`` (seconds of training so far),
``val_accuracy`` (percent), ``val_cross_entropy``, ``val_balanced_accuracy``,
``test_cross_entropy`` and ``test_balanced_accuracy``. The input encoding follows
``yahpo_gym.BenchmarkSet._config_to_xs``: the task id integer-encoded through
``encoding.json`` (an int32 column ``x_cat``), and the raw values of ``epoch, batch_size,
learning_rate, momentum, weight_decay, num_layers, max_units, max_dropout`` in that order
(a float32 matrix ``x_cont``); the model applies its own transforms inside the graph.
The yahpo-gym package itself is not needed (it pins numpy<2).

Example:
    >>> s = LCBenchSurrogate()  # doctest: +SKIP
    >>> curve = s.curve("3945", LCBENCH_DEFAULT)  # doctest: +SKIP
    >>> curve["val_accuracy"][-1], curve["time"][-1]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from raynas.errors import ConfigError

#: Environment variable naming the YAHPO data folder (the one holding ``lcbench/``).
DATA_ENV = "RAYNAS_YAHPO_DATA"
#: Inputs of the surrogate besides the task, in the model's column order.
CONT_NAMES = ("epoch", "batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units", "max_dropout")
HYPERPARAMETERS = CONT_NAMES[1:]
#: Outputs, in the model's column order.
OUTPUTS = ("time", "val_accuracy", "val_cross_entropy", "val_balanced_accuracy", "test_cross_entropy", "test_balanced_accuracy")
EPOCHS = 52
#: Metrics a trial reports each epoch (``time`` becomes ``sim_time``).
METRICS = ("epoch", *OUTPUTS[1:], "sim_time", "sim_epoch_time", "wall_time", "resumed_from")

#: LCBench's search space in raynas's DSL (the ranges of YAHPO's config_space.json).
LCBENCH_SPACE = {
    "batch_size": {"int": [16, 512], "log": True},
    "learning_rate": {"float": [1.0e-4, 1.0e-1], "log": True},
    "momentum": {"float": [0.1, 0.99]},
    "weight_decay": {"float": [1.0e-5, 0.1]},
    "num_layers": {"int": [1, 5]},
    "max_units": {"int": [64, 1024], "log": True},
    "max_dropout": {"float": [0.0, 1.0]},
}
#: YAHPO's default configuration.
LCBENCH_DEFAULT = {
    "batch_size": 91, "learning_rate": 0.0031622777, "momentum": 0.545, "weight_decay": 0.050005,
    "num_layers": 3, "max_units": 256, "max_dropout": 0.5,
}


def default_data_dir() -> Path:
    """``$RAYNAS_YAHPO_DATA``, else ``../shared/data/yahpo`` next to the raynas checkout, else
    the same relative to the working directory (the first that exists; the first candidate if none)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    candidates = [repo.parent / "shared" / "data" / "yahpo", Path.cwd().parent / "shared" / "data" / "yahpo"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def lcbench_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding ``model.onnx`` and ``encoding.json`` (``data_dir`` or ``data_dir/lcbench``).

    Raises:
        FileNotFoundError: Naming the folder looked at and how to point elsewhere.
    """
    base = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    for folder in (base, base / "lcbench"):
        if (folder / "model.onnx").is_file() and (folder / "encoding.json").is_file():
            return folder.resolve()
    raise FileNotFoundError(
        f"no YAHPO LCBench surrogate at {base} (looked for model.onnx and encoding.json there and in "
        f"{base / 'lcbench'}); set trainable.params.data_path or ${DATA_ENV} to the folder of YAHPO Gym's "
        "lcbench data (github.com/slds-lmu/yahpo_data)"
    )


class LCBenchSurrogate:
    """The LCBench ONNX surrogate (one single-threaded onnxruntime session).

    Args:
        data_dir: YAHPO data folder (or its ``lcbench`` subfolder); default :func:`default_data_dir`.
    """

    def __init__(self, data_dir: str | os.PathLike | None = None):
        import numpy as np
        import onnxruntime as ort

        self.folder = lcbench_dir(data_dir)
        with open(self.folder / "encoding.json", encoding="utf-8") as f:
            self.encoding: dict = json.load(f)["OpenML_task_id"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.folder / "model.onnx"), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        inputs = [i.name for i in self.session.get_inputs()]
        self._cat_name, self._cont_name = inputs[0], inputs[1]
        self._np = np

    @property
    def tasks(self) -> list[str]:
        """The OpenML task ids the surrogate knows."""
        return [t for t in self.encoding if t != "#na#"]

    def predict(self, task: str | int, config: Mapping[str, Any], epochs) -> "Any":
        """Outputs (rows: ``epochs``, columns: :data:`OUTPUTS`) as a float array."""
        np = self._np
        task = str(task)
        if task not in self.encoding or task == "#na#":
            raise KeyError(f"unknown LCBench task {task!r}; known: {', '.join(self.tasks)}")
        epochs = np.asarray(epochs, dtype=np.float32).reshape(-1)
        values = [float(config[name]) for name in HYPERPARAMETERS]
        x_cont = np.empty((len(epochs), len(CONT_NAMES)), dtype=np.float32)
        x_cont[:, 0] = epochs
        x_cont[:, 1:] = np.asarray(values, dtype=np.float32)
        x_cat = np.full((len(epochs), 1), self.encoding[task], dtype=np.int32)
        return self.session.run(None, {self._cat_name: x_cat, self._cont_name: x_cont})[0]

    def curve(self, task: str | int, config: Mapping[str, Any], epochs: int = EPOCHS) -> dict[str, list[float]]:
        """Every output for epochs ``1..epochs``: ``{name: [value per epoch]}``."""
        out = self.predict(task, config, range(1, epochs + 1))
        return {name: [float(v) for v in out[:, i]] for i, name in enumerate(OUTPUTS)}


_SURROGATES: dict[str, LCBenchSurrogate] = {}


def surrogate(data_dir: str | os.PathLike | None = None) -> LCBenchSurrogate:
    """One surrogate per process and folder (Ray reuses trial workers)."""
    key = str(lcbench_dir(data_dir))
    if key not in _SURROGATES:
        _SURROGATES[key] = LCBenchSurrogate(key)
    return _SURROGATES[key]


def hyperparameters(config: Mapping[str, Any]) -> dict:
    """The seven LCBench hyperparameters from a sampled config, top-level or nested
    (``{arch: {num_layers: ...}, train: {learning_rate: ...}}`` works too)."""
    from raynas.bench.replay import flat_config

    flat = flat_config(config)
    by_leaf = {path.rsplit(".", 1)[-1]: value for path, value in flat.items()}
    missing = [name for name in HYPERPARAMETERS if name not in by_leaf]
    if missing:
        raise KeyError(f"the config lacks LCBench hyperparameters {', '.join(missing)} (space: raynas.bench.LCBENCH_SPACE)")
    return {name: by_leaf[name] for name in HYPERPARAMETERS}


def known_tasks(folder: str | os.PathLike | None = None) -> list[str]:
    """The tasks of YAHPO's config space (``config_space.json``; the encoding also holds one task
    the space leaves out), else every encoded task."""
    folder = lcbench_dir(folder)
    space = folder / "config_space.json"
    if space.is_file():
        with open(space, encoding="utf-8") as f:
            for hp in json.load(f).get("hyperparameters", []):
                if hp.get("name") == "OpenML_task_id":
                    return [str(c) for c in hp["choices"]]
    with open(folder / "encoding.json", encoding="utf-8") as f:
        return [t for t in json.load(f)["OpenML_task_id"] if t != "#na#"]


def validate_params(
    params: Mapping[str, Any], *, base_dir: str | None = None, max_epochs: int = EPOCHS, space: Any = None
) -> tuple[dict, tuple]:
    """Checks ``trainable.params`` of ``raynas.bench:lcbench`` before Ray starts.

    Keys: ``task`` (OpenML task id, required), ``speedup`` (default 1), ``sleep`` (true),
    ``data_path`` (default :func:`default_data_dir`; relative to the experiment file).
    """
    from raynas.bench.replay import check_speed, need_mapping
    from raynas.spec import unknown_keys
    from raynas.errors import did_you_mean

    params = need_mapping(params, "")
    unknown_keys(params, ["task", "speedup", "sleep", "data_path"], "")
    out = check_speed(params)
    data_path = params.get("data_path")
    if data_path is not None:
        if not isinstance(data_path, str):
            raise ConfigError("data_path", f"expected a folder path, got {data_path!r}")
        if base_dir is not None and not os.path.isabs(os.path.expanduser(data_path)):
            data_path = os.path.normpath(os.path.join(base_dir, data_path))
    try:
        folder = lcbench_dir(data_path)
    except FileNotFoundError as err:
        raise ConfigError("data_path", str(err)) from None
    out["data_path"] = str(folder)
    tasks = known_tasks(folder)
    task = params.get("task")
    if task is None:
        raise ConfigError("task", f"name the OpenML task id, one of {', '.join(tasks)}")
    if isinstance(task, bool) or not isinstance(task, (str, int)) or str(task) not in tasks:
        raise ConfigError("task", f"unknown LCBench task {task!r}{did_you_mean(str(task), tasks)}; known: {', '.join(tasks)}")
    out["task"] = str(task)
    if space is not None:
        try:
            hyperparameters(space.sample(seed=0))
        except KeyError as err:
            raise ConfigError("task", f"{err.args[0]}; LCBench needs all seven in the space") from None
    if max_epochs > EPOCHS:
        raise ConfigError("max_epochs", f"LCBench has {EPOCHS} epochs per configuration, got max_epochs={max_epochs}")
    return out, METRICS


def lcbench(config: dict, context) -> None:
    """Ray Tune trainable: one LCBench configuration, replayed epoch by epoch in simulated time.

    Reports ``epoch, val_accuracy, val_cross_entropy, val_balanced_accuracy,
    test_cross_entropy, test_balanced_accuracy, sim_time, sim_epoch_time, wall_time,
    resumed_from``.

    Example (experiment file)::

        trainable:
          function: raynas.bench:lcbench
          params: {task: "3945", speedup: 100}
        space: {batch_size: {int: [16, 512], log: true}, ...}   # raynas.bench.LCBENCH_SPACE
        objective: {metric: val_accuracy, mode: max}
        max_epochs: 52
    """
    from raynas.bench.replay import replay

    params = context.params
    model = surrogate(params.get("data_path"))
    curve = model.curve(params["task"], hyperparameters(config), min(EPOCHS, context.max_epochs))
    times = curve.pop("time")
    # The surrogate predicts cumulative seconds; each epoch costs the difference.
    seconds = [max(0.0, t - (times[i - 1] if i else 0.0)) for i, t in enumerate(times)]
    rows = [{name: values[i] for name, values in curve.items()} for i in range(len(times))]
    replay(rows, seconds, max_epochs=context.max_epochs, speedup=float(params.get("speedup", 1.0)),
           sleep=bool(params.get("sleep", True)), checkpoint_every=context.checkpoint_every)


lcbench.validate_params = validate_params  # type: ignore[attr-defined]
