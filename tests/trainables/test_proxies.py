"""Zero-cost proxies: values on real models, their known properties, that they leave training
alone, the spec's rules through the console script, and a run that reports them to analyze."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch
from torch import nn

from raynas.errors import ArchError
from raynas.experiment import PROXY_NAMES
from raynas.trainables import proxies as P
from raynas.trainables.families import build_model
from raynas.trainables.trainable import TrialJob, build_trial_model, score_config

from tests.helpers import QUICKSTART, raynas, write_yaml

SHAPE, CLASSES = (1, 8, 8), 10

ARCHS = {
    "mlp": {"depth": 2, "width": 32, "dropout": 0.1, "batch_norm": True},
    "cnn": {"stages": [{"channels": 8, "pool": True}, {"channels": 16}], "activation": "gelu"},
    "resnet": {"stem_channels": 8, "stages": [{"channels": 8}, {"channels": 16, "stride": 2}]},
    "mbconv": {"stem_channels": 8, "stages": [{"channels": 8, "stride": 2, "layers": [{"expansion": 3}]}]},
    "cell": {"channels": 8, "cells_per_stage": 1, "edges": {
        "0-1": "conv3x3", "0-2": "skip", "1-2": "conv1x1", "0-3": "avgpool3x3", "1-3": "none", "2-3": "conv3x3"}},
    "transformer": {"width": 16, "patch_size": 2, "blocks": [{"heads": 2}, {"heads": 4, "mlp_ratio": 1}]},
}


@pytest.fixture(scope="module")
def digits():
    from raynas.trainables.data import load_dataset

    return load_dataset("digits", val_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def xy(digits):
    return P.batch(digits, 32, seed=0)


def _net(family: str, arch: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(family, arch, SHAPE, CLASSES)


def _mlp(width: int, seed: int = 0) -> nn.Module:
    return _net("mlp", {"depth": 2, "width": width}, seed)


def test_the_names_are_the_ones_the_spec_checks():
    assert tuple(P.PROXIES) == PROXY_NAMES == tuple(P.names())


@pytest.mark.parametrize("family", sorted(ARCHS))
def test_every_proxy_is_finite_deterministic_and_leaves_the_net_alone(family, xy):
    net = _net(family, ARCHS[family])
    net.eval()
    modes = [m.training for m in net.modules()]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    timings, notes = {}, {}
    first = P.compute(net, *xy, P.names(), seed=0, timings=timings, notes=notes)
    assert torch.equal(torch.get_rng_state(), rng), "the caller's RNG moved"
    assert set(first) == set(PROXY_NAMES) and notes == {}
    assert all(math.isfinite(v) for v in first.values()), first
    assert set(timings) == set(PROXY_NAMES) and all(t >= 0 for t in timings.values())
    # The net: same weights and buffers (batch norm statistics too), no gradients, same modes.
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in net.parameters())
    assert [m.training for m in net.modules()] == modes
    assert P.compute(net, *xy, P.names(), seed=0) == first  # same net, batch and seed: same values


def test_synflow_is_zero_when_a_layer_is_zero_and_grows_with_width(xy):
    net = _mlp(32)
    assert P.synflow(net, *xy) > 0
    with torch.no_grad():
        # The second hidden layer all zero (weight and bias, else its bias feeds the layer after
        # it): no path from the input to the output is left.
        net[3].weight.zero_()
        net[3].bias.zero_()
    assert P.synflow(net, *xy) == 0.0
    for seed in range(3):
        assert P.synflow(_mlp(16, seed), *xy) < P.synflow(_mlp(64, seed), *xy) < P.synflow(_mlp(256, seed), *xy)


def test_synflow_uses_only_the_input_shape(xy):
    x, y = xy
    assert P.synflow(_mlp(32), x, y) == P.synflow(_mlp(32), torch.randn_like(x), y.flip(0))


def test_naswot_is_higher_for_a_wider_net_on_the_same_batch(xy):
    for seed in range(3):
        assert P.naswot(_mlp(32, seed), *xy) < P.naswot(_mlp(128, seed), *xy) < P.naswot(_mlp(512, seed), *xy)


def test_naswot_is_the_log_determinant_of_the_hamming_kernel():
    # One ReLU layer of 3 units, identity weights: the codes are the inputs' signs.
    net = nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3))
    x = torch.tensor([[1.0, -1, -1], [1, 1, -1], [-1, -1, 1]])
    codes = (x > 0).double()
    kernel = codes @ codes.T + (1 - codes) @ (1 - codes).T  # units where two samples agree
    assert P.naswot(net, x, torch.zeros(3, dtype=torch.long)) == pytest.approx(torch.logdet(kernel).item())


def test_snip_and_grad_norm_follow_the_loss_gradient(xy):
    x, y = xy
    net = _mlp(32)
    twin = _mlp(32)
    torch.nn.functional.cross_entropy(twin(x), y).backward()
    layers = [m for m in twin.modules() if isinstance(m, nn.Linear)]
    assert P.snip(net, x, y) == pytest.approx(sum(float((m.weight.detach() * m.weight.grad).abs().sum()) for m in layers))
    assert P.grad_norm(net, x, y) == pytest.approx(sum(float(m.weight.grad.norm()) for m in layers))


def test_a_proxy_without_a_finite_value_is_nan_with_its_reason(xy, caplog):
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, CLASSES))  # no activation: nothing for naswot to read
    dead = _mlp(16)
    with torch.no_grad():
        dead[-1].weight.zero_()  # the output does not depend on the input: constant Jacobians
    notes = {}
    assert math.isnan(P.compute(linear, *xy, ["naswot"], notes=notes)["naswot"])
    assert "no activation module" in notes["naswot"]
    values = P.compute(dead, *xy, ["jacob_cov", "synflow"], notes=notes)
    assert math.isnan(values["jacob_cov"]) and "Jacobian is constant" in notes["jacob_cov"]
    assert values["synflow"] == 0.0
    assert "proxy jacob_cov is NaN" in caplog.text


def test_an_unknown_proxy_is_a_caller_error(xy):
    with pytest.raises(ValueError, match="unknown proxy 'naswt' \\(did you mean 'naswot'\\?\\)"):
        P.compute(_mlp(8), *xy, ["naswt"])


def test_batch_is_seeded_and_from_the_training_split(digits):
    x, y = P.batch(digits, 16, seed=1)
    assert tuple(x.shape) == (16, *SHAPE) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(x, P.batch(digits, 16, seed=1)[0]) and not torch.equal(x, P.batch(digits, 16, seed=2)[0])
    train = torch.as_tensor(digits.x_train).reshape(len(digits.x_train), -1)
    assert all((train == row.reshape(1, -1)).all(dim=1).any() for row in x)
    assert len(P.batch(digits, 10**6)[0]) == len(digits.x_train)


def test_score_config_builds_the_trials_model(digits):
    config = {"arch": {"depth": 1, "width": 16}, "train": {"lr": 0.01}}
    job = TrialJob(model="mlp", seed=3)
    torch.manual_seed(7)
    rng = torch.get_rng_state()
    scores = score_config(config, job, digits, ["naswot", "snip"])
    assert torch.equal(torch.get_rng_state(), rng)
    net = build_trial_model(config, job, digits)
    assert scores == P.compute(net, *P.batch(digits, P.BATCH_SIZE, 3), ["naswot", "snip"], seed=3)
    with pytest.raises(ArchError, match="arch.stages"):
        score_config({"arch": {"stages": [{"channels": 4, "stride": 2}] * 5}}, TrialJob(model="cnn"), digits, ["naswot"])


def test_training_is_the_same_with_and_without_proxies(digits, monkeypatch):
    """The built-in trainable's reports (no Ray: tune.report captured) with and without proxies."""
    from ray import tune

    from raynas.trainables import trainable

    monkeypatch.setattr(trainable, "_latest_checkpoint", lambda *a: (None, None))
    config = {"arch": {"depth": 2, "width": 32, "dropout": 0.2, "batch_norm": True}, "train": {"lr": 0.01, "batch_size": 64}}

    def reports(proxies: tuple) -> list[dict]:
        out = []
        monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: out.append(metrics))
        job = TrialJob(model="mlp", max_epochs=2, seed=5, checkpoint_every=0, proxies=proxies)
        trainable._train_builtin(config, job, digits)
        return out

    plain, scored = reports(()), reports(tuple(PROXY_NAMES))
    keys = ("epoch", "train_loss", "val_loss", "val_acc", "lr", "params", "flops")
    assert [{k: r[k] for k in keys} for r in plain] == [{k: r[k] for k in keys} for r in scored]
    assert len(scored) == 2 and not any(p in plain[0] for p in PROXY_NAMES)
    assert all(math.isfinite(scored[-1][p]) for p in PROXY_NAMES)
    assert scored[0]["naswot"] == scored[1]["naswot"]  # once per trial, reported with every epoch


@pytest.mark.parametrize(
    "change, where",
    [
        ({"proxies": ["naswt"]}, "proxies.0: unknown proxy 'naswt' (did you mean 'naswot'?)"),
        ({"proxies": ["snip"], "trainable": "mymodule:train"}, "proxies: proxies are computed by the built-in trainable"),
        ({"objective": {"metric": "synflow"}}, "objective.metric: 'synflow' is a zero-cost proxy, reported only when asked for"),
        ({"proxies": ["synflow"], "objective": {"metric": "synflow"}, "scheduler": {"name": "asha"}},
         "scheduler.metric: synflow is fixed by the architecture"),
    ],
)
def test_bad_proxies_exit_2_before_ray(tmp_path, ray_env, change, where):
    from pathlib import Path

    exp = write_yaml(tmp_path / "bad.yaml", {"name": "bad", "space": {"arch": {"depth": 1}}, **change})
    proc = raynas("validate", exp, env=ray_env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"raynas: error: {exp}: ") and where in lines[0], proc.stderr
    assert not any(Path(ray_env["RAY_TMPDIR"]).iterdir()), "Ray must not start on bad input"


@pytest.mark.ray
@pytest.mark.slow
def test_a_run_reports_the_proxies_to_the_objective_and_to_analyze(tmp_path, ray_env):
    import yaml

    raw = yaml.safe_load(QUICKSTART.read_text())
    raw.update(name="proxied", proxies=["naswot", "synflow", "grad_norm", "snip", "jacob_cov"], max_epochs=1,
               search={"searcher": "random", "num_trials": 2, "seed": 0}, scheduler={"name": "fifo"},
               objective={"metric": ["val_acc", "naswot"], "mode": ["max", "max"]})
    exp = write_yaml(tmp_path / "proxied.yaml", raw)
    proc = raynas("run", exp, "--storage-path", tmp_path / "res", env=ray_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "res" / "proxied"
    board = json.loads(raynas("analyze", folder, "--format", "json").stdout)
    assert len(board) == 2
    for trial in board:
        assert set(trial["proxies"]) == set(PROXY_NAMES), trial
        assert all(isinstance(v, float) and math.isfinite(v) for v in trial["proxies"].values())
        assert trial["metrics"]["naswot"] == trial["proxies"]["naswot"]
    table = raynas("analyze", folder).stdout
    assert all(name in table for name in PROXY_NAMES), table
    rows = list(csv.DictReader(io.StringIO(raynas("analyze", folder, "--format", "csv").stdout)))
    assert {float(r["naswot"]) for r in rows} == {t["proxies"]["naswot"] for t in board}
    front = json.loads(raynas("analyze", folder, "--pareto", "--format", "json").stdout)
    assert front["metrics"] == ["val_acc", "naswot"] and front["front"]


def test_analyze_shows_the_proxies_of_a_folder(tmp_path):
    """A hand-written folder (no Ray): proxies become columns of the table and the CSV, and a
    ``proxies`` entry of each JSON trial; a folder without them shows no such column."""
    from raynas.analysis import load_results, render
    from raynas.experiment import Status, TrialRecord, update_meta, write_journal

    def folder(name: str, proxied: bool):
        exp = tmp_path / name
        exp.mkdir()
        update_meta(exp, name=name)
        (exp / "experiment.yaml").write_text("objective: {metric: val_acc, mode: max}\nmax_epochs: 1\n")
        records = {}
        for order in (1, 2):
            (exp / f"trial_t{order}").mkdir()
            row = {"epoch": 1, "val_acc": 0.5 * order, "params": 100 * order}
            if proxied:
                row.update(naswot=123.456 * order, synflow=1.5e12 * order, jacob_cov=float("nan"))
            (exp / f"trial_t{order}" / "result.json").write_text(json.dumps(row) + "\n")
            records[f"t{order}"] = TrialRecord(f"t{order}", order=order, status=Status.COMPLETED, config={"arch": {"w": order}},
                                               dir=f"trial_t{order}", epochs=1)
        write_journal(exp, records)
        return load_results(exp)

    results = folder("proxied", True)
    text = render.table(results)
    header = text.splitlines()[1].split()
    assert header[header.index("latency_ms") + 1:][:3] == ["synflow", "naswot", "jacob_cov"], header
    assert "3e+12" in text and "246.9" in text and "nan" in text
    board = json.loads(render.json_list(results))
    assert board[0]["proxies"] == {"synflow": 3e12, "naswot": 246.912, "jacob_cov": None}
    rows = list(csv.DictReader(io.StringIO(render.csv(results))))
    assert [float(r["naswot"]) for r in rows] == [246.912, 123.456]
    plain = folder("plain", False)
    assert "naswot" not in render.table(plain) and "proxies" not in json.loads(render.json_list(plain))[0]
