"""An experiment folder as the winner's commands read it: its spec, its data."""

from __future__ import annotations

from pathlib import Path

import yaml

from raynas.errors import ConfigError
from raynas.experiment import DATA_FILE, SPEC_FILE, is_experiment_dir, read_json, read_meta


def search_spec_raw(exp_dir: Path) -> dict:
    """The experiment file a folder was run with (after overrides), as a dict."""
    with open(exp_dir / SPEC_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def check_experiment(exp_dir: str | Path, what: str = "a search") -> Path:
    """The resolved folder; ConfigError unless it is a raynas experiment folder."""
    path = Path(exp_dir).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError("DIR", f"no such folder: {path}")
    if not is_experiment_dir(path) or not (path / SPEC_FILE).is_file():
        raise ConfigError("DIR", f"{path} is not a raynas experiment folder (no raynas.json and {SPEC_FILE}); "
                                 f"give the folder `raynas run` wrote for {what}")
    return path


def data_info(exp_dir: Path) -> dict:
    """The experiment's ``data.json``; for a folder written without one, the data loaded again."""
    info = read_json(exp_dir / DATA_FILE)
    if info:
        return info
    return experiment_data(exp_dir).info()


def experiment_data(exp_dir: Path):
    """The experiment's Dataset (with its test split, if it has one)."""
    from raynas.runner import _load_data
    from raynas.spec import spec_from_dict

    spec = spec_from_dict(search_spec_raw(exp_dir), file=str(exp_dir / "experiment.yaml"),
                          base_dir=read_meta(exp_dir).get("base_dir"))
    dataset = _load_data(spec)
    if dataset is None:
        raise ConfigError("data", f"{exp_dir} has no data section: raynas has no data to score the model on")
    return dataset
