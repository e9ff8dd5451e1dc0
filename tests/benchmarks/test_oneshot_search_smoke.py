"""benchmarks/oneshot_search.py: the experiments it builds (no Ray), and a CI smoke run with a tiny
budget, checking that it works (not its numbers)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "oneshot_search.py"
#: Fashion-MNIST's IDX files where the Debian package dataset-fashion-mnist was extracted (not in CI).
FASHION_MNIST = "/tmp/fmnist_deb/usr/share/datasets/fashion-mnist"


def module():
    spec = importlib.util.spec_from_file_location("oneshot_search", SCRIPT)
    out = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(out)
    return out


def test_the_default_is_digits_with_a_test_split_and_two_stages():
    import raynas

    bench = module()
    exp = bench.experiment("one-shot", bench.parse_args([]), 0)
    assert exp["data"] == {"source": "digits", "val_fraction": 0.2, "seed": 0, "test_fraction": 0.2}
    assert exp["space"]["arch"]["stages"] == 2
    raynas.spec_from_dict(exp)


def test_an_idx_source_keeps_its_published_test_set(tmp_path):
    import raynas

    bench = module()
    args = bench.parse_args(["--data", "fashion_mnist", "--data-path", str(tmp_path), "--max-samples", "600", "--stages", "3"])
    for method in bench.METHODS:
        exp = bench.experiment(method, args, 1)
        # No test_fraction: fashion_mnist's test split is its t10k files, and raynas refuses both.
        assert exp["data"] == {"source": "fashion_mnist", "val_fraction": 0.2, "seed": 0, "path": str(tmp_path),
                               "max_samples": 600}
        assert exp["space"]["arch"]["stages"] == 3
        spec = raynas.spec_from_dict(exp)
        assert spec.data.max_samples == 600 and spec.data.path == str(tmp_path)


def test_a_missing_data_folder_stops_before_ray_starts(tmp_path, capsys):
    bench = module()
    assert bench.main(["--data", "fashion_mnist", "--data-path", str(tmp_path / "absent")]) == 2
    assert "data.path" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason=f"Fashion-MNIST's IDX files are not at {FASHION_MNIST} "
                    "(extract the Debian package dataset-fashion-mnist there; CI has no copy)")
def test_the_fashion_mnist_experiment_loads_a_stratified_subsample():
    import raynas
    from raynas.runner import _load_data

    bench = module()
    args = bench.parse_args(["--data", "fashion_mnist", "--data-path", FASHION_MNIST, "--max-samples", "500", "--stages", "3"])
    data = _load_data(raynas.spec_from_dict(bench.experiment("evolution+asha", args, 0)))
    assert tuple(data.input_shape) == (1, 28, 28) and data.num_classes == 10
    assert len(data.y_train) + len(data.y_val) == 500 and len(data.y_test) == 10_000
    assert sorted(set(data.y_train.tolist())) == list(range(10))


@pytest.mark.ray
@pytest.mark.slow
def test_oneshot_search_benchmark_smoke(ray_env):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--search-seeds", "1", "--evolution-trials", "3",
         "--oneshot-trials", "3", "--epochs", "1", "--supernet-epochs", "1", "--top", "1", "--seeds", "1", "--methods", "one-shot,gradient",
         "--json"],
        capture_output=True, text=True, timeout=900, env={**os.environ, **ray_env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(proc.stdout)["runs"]
    assert [r["method"] for r in runs] == ["one-shot", "gradient"]  # evolution+asha is a plain raynas search
    for r in runs:
        assert r["trial_s"] > 0 and 0 <= r["first_pick_test"] <= 1 and len(r["picks"]) == 1
