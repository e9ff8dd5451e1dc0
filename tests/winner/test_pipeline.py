"""run -> retrain -> compress -> export -> load_model().predict, as users take it: every step
through the `raynas` console script, on digits (images) and on a CSV table (experiments/)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import raynas as api
from raynas.experiment import Status, read_journal
from raynas.trainables.data import load_dataset
from tests.analysis._chromium import Page, require_chromium
from tests.helpers import CONSOLE_SCRIPT, EXPERIMENTS, ROOT, folder_state, raynas

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: A compressed model's test accuracy may fall at most this much below the uncompressed one
#: (50% of the channels pruned, 5 fine-tuning epochs, int8): the tolerance docs/winner.md states.
ACCURACY_TOLERANCE = 0.05


def _run(*args, env):
    proc = raynas(*args, env=env)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def _json(*args):
    proc = raynas(*args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def ray_tmp():
    path = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # AF_UNIX paths <= 107 bytes
    yield {"RAY_TMPDIR": path}
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def digits(tmp_path_factory, ray_tmp):
    """cnn_digits (a fifth of digits held out as test), then its 2 best retrained with 2 seeds,
    interrupted and continued."""
    storage = tmp_path_factory.mktemp("winner")
    _run("run", EXPERIMENTS / "cnn_digits.yaml", "--storage-path", storage, "--quiet", "--no-report",
         "--set", "search.num_trials=3", "--set", "max_epochs=4", "--set", "scheduler={name: fifo}", env=ray_tmp)
    folder = storage / "cnn_digits"
    # Ctrl-C once a retrain trial has finished, then the same command again: it continues. Sixteen
    # epochs (seconds a training) leave the Ctrl-C time to land with trainings still to run.
    args = ["retrain", folder, "--top", "2", "--seeds", "2", "--epochs", "16", "--quiet", "--no-report"]
    child = subprocess.Popen([str(CONSOLE_SCRIPT), *map(str, args)], env={**os.environ, **ray_tmp},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while child.poll() is None and time.monotonic() < deadline:
        journal = read_journal(folder / "retrain") if (folder / "retrain" / "trials.json").exists() else {}
        if any(r.status is Status.COMPLETED for r in journal.values()):
            break
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=300)
    assert child.returncode == 130 and f"raynas retrain {folder}" in err, err[-3000:]
    done = [r for r in read_journal(folder / "retrain").values() if r.status is Status.COMPLETED]
    assert 1 <= len(done) < 4
    proc = _run(*args, env=ray_tmp)
    return folder, proc.stdout


def _readme_winner() -> tuple[list[list[str]], str]:
    """The README's winner section: its shell commands and its Python example."""
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- docs:winner -->", 1)[1]
    bash, python = re.findall(r"```(?:bash|python)\n(.*?)```", section, flags=re.S)[:2]
    return [shlex.split(line) for line in bash.strip().splitlines()], python


@pytest.fixture(scope="module")
def wine(tmp_path_factory, ray_tmp):
    """The README's winner commands, as written, in a fresh folder beside the experiments."""
    cwd = tmp_path_factory.mktemp("readme")
    (cwd / "experiments").symlink_to(EXPERIMENTS)
    commands, python = _readme_winner()
    outputs = []
    for command in commands:
        assert command[0] == "raynas", command
        proc = raynas(*command[1:], env=ray_tmp, cwd=cwd)
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-3000:])
        outputs.append(proc.stdout)
    example = subprocess.run([sys.executable, "-c", python], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert example.returncode == 0, example.stderr
    return cwd / "raynas_results" / "wine_csv", outputs, example.stdout


def _digits_test():
    """The digits test split as raw images (0..16, as the source file holds them) and labels."""
    data = load_dataset("digits", seed=0, test_fraction=0.2)
    return np.rint(data.x_test[:, 0] * 16).astype(np.uint8), np.asarray(data.classes)[data.y_test]


def test_retrain_reports_test_accuracy_per_architecture(digits):
    folder, out = digits
    board = _json("analyze", folder)
    retrained = [t for t in board if "test" in t]
    assert [t["rank"] for t in retrained] == [1, 2]
    runs = _json("analyze", folder / "retrain")
    assert len(runs) == 4 and all(r["status"] == "completed" for r in runs)
    for t in retrained:
        accs = [r["metrics"]["test_acc"] for r in runs if r["config"]["raynas_retrain"]["trial"] == t["trial_id"]]
        assert sorted(t["test"]["test_acc"]) == sorted(accs) and t["test"]["n"] == 2
        assert t["test"]["mean"] == pytest.approx(np.mean(accs))
        assert t["test"]["sd"] == pytest.approx(np.std(accs, ddof=1))
        assert f"{t['test']['mean']:.4f} ± {t['test']['sd']:.4f}" in out
    # Each seed trained its own model: the same architecture, other weights.
    seeds = {(r["config"]["raynas_retrain"]["trial"], r["config"]["raynas_retrain"]["seed"]) for r in runs}
    assert len(seeds) == 4
    table = raynas("analyze", folder).stdout
    assert "test_acc" in table.splitlines()[1]


def test_retrain_on_full_data_with_lightning_trains_on_train_and_validation(digits, tmp_path, ray_tmp):
    folder, _ = digits
    copy = tmp_path / "cnn_digits"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("retrain"))
    # The retrain takes the search's settings: here the Lightning engine, which scores the test split too.
    spec = yaml.safe_load((copy / "experiment.yaml").read_text())
    (copy / "experiment.yaml").write_text(yaml.safe_dump({**spec, "trainer": {"engine": "lightning"}}))
    _run("retrain", copy, "--top", "1", "--seeds", "1", "--epochs", "1", "--full-data", "--quiet", "--no-report",
         env=ray_tmp)
    (trial,) = _json("analyze", copy / "retrain")
    sizes = json.loads((copy / "data.json").read_text())["sizes"]
    assert trial["metrics"]["train_samples"] == sizes["train"] + sizes["val"] and trial["epochs"] == 1
    assert 0 < trial["metrics"]["test_acc"] <= 1
    (plain,) = [r for r in _json("analyze", folder / "retrain") if r["rank"] == 1]
    assert plain["metrics"]["train_samples"] == sizes["train"]


def test_retrain_again_continues_or_refuses_other_settings(digits, ray_tmp):
    folder, out = digits
    before = folder_state(folder)
    again = _run("retrain", folder, "--top", "2", "--seeds", "2", "--epochs", "16", "--quiet", env=ray_tmp)
    assert again.stdout.strip().splitlines()[:4] == out.strip().splitlines()[:4]  # finished: shown, not rerun
    other = raynas("retrain", folder, "--top", "2", "--seeds", "3", "--epochs", "16", env=ray_tmp)
    assert other.returncode == 2 and "other settings" in other.stderr, other.stderr
    assert folder_state(folder) == before


def test_report_shows_the_test_scores(digits, tmp_path):
    require_chromium()
    folder, _ = digits
    target = tmp_path / "report.html"
    _run("report", folder, "-o", target, env={})
    board = _json("analyze", folder)
    with Page(target.as_uri()) as page:
        page.wait_for("document.body && document.body.getAttribute('data-render-ms')")
        assert page.evaluate("window.RAYNAS_ERRORS") == []
        head = page.evaluate("Array.from(document.querySelectorAll('#board th')).map(c => c.textContent)")
        assert "test_acc" in head
        column = head.index("test_acc")
        cells = page.evaluate(f"Array.from(document.querySelectorAll('#board tbody tr')).map(r => r.cells[{column}].textContent)")
        expected = [f"{t['test']['mean']:.4f} ± {t['test']['sd']:.4f} (2)" if "test" in t else "-" for t in board]
        assert cells == expected
        page.evaluate(f"document.querySelector('#board tr[data-id=\"{board[0]['trial_id']}\"]').click()")
        assert f"{board[0]['test']['mean']:.4f}" in page.evaluate("document.getElementById('detail').innerText")


def test_exported_model_scores_what_retrain_reported(digits, tmp_path):
    folder, _ = digits
    best = _json("analyze", folder / "retrain")[0]
    images, labels = _digits_test()
    predictions = {}
    for fmt in ("state_dict", "torchscript", "onnx"):
        path = tmp_path / f"model.{fmt}"
        proc = _run("export", folder / "retrain", "--rank", "1", "--format", fmt, "-o", path, env={})
        assert f"Exported: {path}" in proc.stdout
        model = api.load_model(path)
        predictions[fmt] = model.predict(images)
        assert model.meta["trial_id"] == best["trial_id"] and model.meta["arch"] == best["config"]["arch"]
        assert float(np.mean(predictions[fmt] == labels)) == pytest.approx(best["metrics"]["test_acc"], abs=1e-6)  # float32 in the trial
    np.testing.assert_array_equal(predictions["onnx"], predictions["state_dict"])
    # The folder itself loads too: its best trial, without writing a file.
    direct = api.load_model(folder / "retrain")
    np.testing.assert_array_equal(direct.predict(images), predictions["state_dict"])


def test_compress_prunes_and_quantizes_within_tolerance(digits, tmp_path):
    folder, _ = digits
    proc = _run("compress", folder / "retrain", "--prune", "0.5", "--structured", "--finetune-epochs", "5",
                "--quantize", "int8", env={})
    out = proc.stdout
    assert "structured (channel) pruning of 0.5" in out and "test accuracy" in out
    tables = sorted((folder / "retrain" / "compressed").glob("*.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    before, after = table["before"], table["after"]
    assert after["params"] < 0.75 * before["params"] and after["size_bytes"] < 0.5 * before["size_bytes"]
    assert after["accuracy"] >= before["accuracy"] - ACCURACY_TOLERANCE
    model = api.load_model(table["artifact"])
    images, labels = _digits_test()
    assert float(np.mean(model.predict(images) == labels)) == pytest.approx(after["accuracy"], abs=1e-6)  # float32 in the trial
    # analyze shows what compress made of the trial
    (shown,) = [t for t in _json("analyze", folder / "retrain") if t["trial_id"] == table["trial_id"]]
    assert shown["compressed"][0]["after"] == after
    assert f"{table['trial_id']}: structured (channel) pruning of 0.5" in raynas("analyze", folder / "retrain").stdout
    # Unstructured pruning keeps the shapes and zeroes weights: non-zeros fall, parameters do not.
    out = tmp_path / "sparse.pt"
    _run("compress", folder / "retrain", "--prune", "0.6", "-o", out, env={})
    sparse = json.loads(Path(str(out) + ".json").read_text())
    assert sparse["after"]["params"] == sparse["before"]["params"]
    assert sparse["after"]["nonzero"] < 0.5 * sparse["before"]["nonzero"]


def test_readme_winner_commands_on_a_csv(wine):
    folder, outputs, printed = wine
    run, retrain, compress, export = outputs
    assert "test_acc (mean ± sd)" in retrain and len(_json("analyze", folder / "retrain")) == 6
    assert "structured (channel) pruning of 0.5" in compress and "5 fine-tuning epochs" in compress
    assert "Exported: wine_model.pt" in export
    # The example prints five predictions, each a cultivar as the CSV names it.
    names = re.findall(r"[a-z]+", printed)
    assert len(names) == 5 and set(names) <= {"barolo", "grignolino", "barbera"}, printed


def test_csv_model_scores_what_retrain_reported_from_raw_rows(wine):
    folder, _, _ = wine
    data = load_dataset("csv", path=str(EXPERIMENTS / "wine.csv"), target="cultivar", val_fraction=0.2,
                        test_fraction=0.2, seed=0)
    rows = pd.read_csv(EXPERIMENTS / "wine.csv")
    from raynas.trainables.data.preprocess import Preprocessing

    # The test split's raw rows, found by their features.
    features = Preprocessing.from_dict(data.preprocessing)(rows)
    test_rows = rows.iloc[[int(np.flatnonzero((features == row).all(axis=1))[0]) for row in data.x_test]]
    best = _json("analyze", folder / "retrain")[0]
    model = api.load_model(folder.parent.parent / "wine_model.pt")
    assert model.meta["trial_id"] == best["trial_id"]
    labels = model.predict(test_rows)  # raw CSV rows, target column included
    assert float(np.mean(labels == test_rows["cultivar"].to_numpy())) == pytest.approx(best["metrics"]["test_acc"], abs=1e-6)  # float32 in the trial
    one = model.predict(test_rows.drop(columns=["cultivar"]).iloc[0].to_dict())
    assert one[0] == labels[0]
    compressed = api.load_model(next((folder / "retrain" / "compressed").glob("*.pt")))
    table = json.loads(next((folder / "retrain" / "compressed").glob("*.json")).read_text())
    assert float(np.mean(compressed.predict(test_rows) == test_rows["cultivar"].to_numpy())) == pytest.approx(
        table["after"]["accuracy"], abs=1e-6)  # float32 in the trial


def test_bad_input_exits_2_and_changes_nothing(digits, tmp_path):
    folder, _ = digits
    before = folder_state(folder)
    fresh = {"RAY_TMPDIR": tempfile.mkdtemp(prefix="rt", dir="/tmp")}
    cases = [
        (("export", folder, "--trial", "nosuchtrial"), "is no trial"),
        (("export", folder, "--rank", "99"), "no rank 99"),
        (("export", tmp_path), "is not a raynas experiment folder"),
        (("compress", folder, "--prune", "1.5"), "in (0, 1)"),
        (("compress", folder, "--prune", "0"), "in (0, 1)"),
        (("compress", folder, "--quantize", "int4"), "int8, fp16"),
        (("compress", folder), "nothing to do"),
        (("compress", folder, "--structured", "--quantize", "int8"), "give --prune"),
        (("retrain", folder / "retrain"), "is a retrain already"),
        (("retrain", folder, "--top", "0"), "--top"),
    ]
    for args, words in cases:
        proc = raynas(*args, env=fresh)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and proc.stderr.startswith("raynas: error: "), (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert folder_state(folder) == before
    assert not any(Path(fresh["RAY_TMPDIR"]).iterdir()), "Ray must not start on bad input"
    shutil.rmtree(fresh["RAY_TMPDIR"])


def test_a_failed_trial_is_refused(tmp_path, ray_tmp):
    storage = tmp_path / "r"
    # A learning rate that makes the loss NaN: the trial fails (and the run exits 1).
    proc = raynas("run", EXPERIMENTS / "wine_csv.yaml", "--storage-path", storage, "--quiet", "--no-report",
                  "--set", "search.num_trials=1", "--set", "max_epochs=2", "--set", "space.train.lr=1.0e+30", env=ray_tmp)
    assert proc.returncode == 1, proc.stderr
    folder = storage / "wine_csv"
    trial = _json("analyze", folder)[0]["trial_id"]
    before = folder_state(folder)
    proc = raynas("export", folder, "--trial", trial)
    assert proc.returncode == 2 and "failed: training loss became nan" in proc.stderr, proc.stderr
    assert "export a trial that trained" in proc.stderr
    proc = raynas("retrain", folder)
    assert proc.returncode == 2 and "nothing to retrain" in proc.stderr
    assert folder_state(folder) == before


USER_TRAINABLE = '''
import os
import tempfile

import torch
from ray import tune


def train(config, context):
    data = context.data
    if data.x_test is not None or data.y_test is not None:  # a search's trials never see the test split
        raise RuntimeError("the trial got the test split")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for epoch in range(1, context.max_epochs + 1):
        for _ in range(30):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        with torch.no_grad():
            acc = float((net(torch.as_tensor(data.x_val)).argmax(1).numpy() == data.y_val).mean())
        with tempfile.TemporaryDirectory() as folder:
            if config["whole"]:
                torch.save(net, os.path.join(folder, "model.pt"))
            else:
                torch.save(net.state_dict(), os.path.join(folder, "weights.pt"))
            tune.report({"val_acc": acc, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(folder))
'''


def test_user_trainable_exports_what_its_checkpoint_holds(tmp_path, ray_tmp):
    (tmp_path / "my_trainer.py").write_text(USER_TRAINABLE)
    spec = {"name": "mine", "trainable": "my_trainer:train", "metrics": ["val_acc", "epoch"],
            "data": {"source": "digits", "test_fraction": 0.2}, "space": {"whole": {"choice": [True, False]}},
            "search": {"searcher": "grid"}, "max_epochs": 2, "objective": {"metric": "val_acc", "mode": "max"}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(spec))
    _run("run", tmp_path / "mine.yaml", "--storage-path", tmp_path / "r", "--quiet", "--no-report", env=ray_tmp)
    folder = tmp_path / "r" / "mine"
    trials = {t["config"]["whole"]: t for t in _json("analyze", folder)}
    out = tmp_path / "mine.pt"
    _run("export", folder, "--trial", trials[True]["trial_id"], "-o", out, env={})
    model = api.load_model(out)
    images, labels = _digits_test()
    accuracy = float(np.mean(model.predict(images) == labels))
    assert model.meta["family"] is None and 0.8 < accuracy <= 1.0  # raw 0..16 images, scaled as in training
    before = folder_state(folder)
    proc = raynas("export", folder, "--trial", trials[False]["trial_id"])
    assert proc.returncode == 2 and "user trainable 'my_trainer:train'" in proc.stderr and "weights.pt" in proc.stderr
    assert "model.pt" in proc.stderr and folder_state(folder) == before
    proc = raynas("retrain", folder)
    assert proc.returncode == 2 and "raynas retrains only its built-in trainable" in proc.stderr


def test_compress_top_k_of_a_pareto_front(tmp_path, ray_tmp):
    """Two objectives: --top takes the front, best first. Without a test split, retrain is
    refused and compress says that it scores on the validation split."""
    _run("run", EXPERIMENTS / "pareto_digits.yaml", "--storage-path", tmp_path, "--quiet", "--no-report",
         "--set", "search.num_trials=4", "--set", "max_epochs=2", env=ray_tmp)
    folder = tmp_path / "pareto_digits"
    front = _json("analyze", folder, "--pareto")
    ids = [f["trial_id"] for f in front["front"]][:2]
    before = folder_state(folder)
    proc = raynas("retrain", folder)  # the validation split chose these architectures: nothing unbiased to score
    assert proc.returncode == 2 and "held out no test split" in proc.stderr and "data.test_fraction" in proc.stderr
    assert folder_state(folder) == before
    proc = _run("compress", folder, "--top", "2", "--quantize", "int8", env={})
    assert "validation split" in proc.stderr and "val accuracy" in proc.stdout
    tables = [json.loads(p.read_text()) for p in sorted((folder / "compressed").glob("*.json"))]
    assert sorted(t["trial_id"] for t in tables) == sorted(ids)
    assert all(t["split"] == "val" and t["after"]["size_bytes"] < t["before"]["size_bytes"] for t in tables)
