"""The lookup trainable's tables (JSON and CSV, curves or not) and the errors bad ones give."""

import json

import pytest

from raynas.bench.lookup import LookupTable, TableError, make_key
from raynas.spec import spec_from_dict
from raynas.errors import ConfigError
from tests.helpers import EXPERIMENTS, raynas, write_yaml


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    return path


def test_json_mapping_with_curves_times_and_static_metrics(tmp_path):
    path = write(tmp_path, "t.json", {
        "a|b": {"val_acc": [0.5, 0.7, 0.8], "time": [10, 11, 12], "params": 1200},
        "b|b": {"val_acc": [0.4, 0.6, 0.9], "time": 30, "params": 900},
    })
    table = LookupTable(path)
    assert table.metrics == ["params", "val_acc"]
    rows, seconds, static = table.rows("a|b")
    assert rows == [{"val_acc": 0.5}, {"val_acc": 0.7}, {"val_acc": 0.8}]
    assert seconds == [10.0, 11.0, 12.0] and static == {"params": 1200}
    # One number of seconds for a whole curve is spread over its epochs.
    assert table.rows("b|b")[1] == [10.0, 10.0, 10.0]


def test_json_rows_without_curves_report_once(tmp_path):
    path = write(tmp_path, "t.json", [{"key": "x", "val_acc": 0.9, "time": 50}, {"key": "y", "val_acc": 0.8}])
    table = LookupTable(path)
    assert table.rows("x") == ([{"val_acc": 0.9}], [50.0], {})
    assert table.rows("y") == ([{"val_acc": 0.8}], None, {})


def test_csv_one_row_per_architecture(tmp_path):
    path = write(tmp_path, "t.csv", "arch,val_acc,params,time\nconv|skip,0.91,1200,40.5\nskip|skip,0.6,0,\n")
    table = LookupTable(path, key_column="arch")
    assert table.rows("conv|skip") == ([{"val_acc": 0.91, "params": 1200}], [40.5], {})
    assert table.rows("skip|skip") == ([{"val_acc": 0.6, "params": 0}], None, {})


def test_csv_long_form_curves_in_any_row_order(tmp_path):
    path = write(tmp_path, "t.csv", "key,epoch,val_acc,time\na,2,0.7,11\na,1,0.5,10\nb,1,0.4,9\n")
    table = LookupTable(path)
    assert table.rows("a") == ([{"val_acc": 0.5}, {"val_acc": 0.7}], [10.0, 11.0], {})
    assert table.rows("b") == ([{"val_acc": 0.4}], [9.0], {})


def test_the_worked_example_table_reads():
    table = LookupTable(EXPERIMENTS / "lookup_tiny.csv")
    assert len(table.entries) == 16
    rows, seconds, _ = table.rows("conv3|skip")
    assert len(rows) == len(seconds) == 4 and all(s > 0 for s in seconds)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("t.csv", "arch,val_acc\na,1\n", "line 2: no 'key' value"),
        ("t.csv", "key,val_acc\na,1\na,2\n", "line 3: key 'a' appears twice"),
        ("t.csv", "key,epoch,val_acc\na,1,0.5\na,3,0.6\n", "key 'a' has epochs up to 3 but not [2]"),
        ("t.csv", "key,epoch,val_acc\na,1,0.5\na,1,0.6\n", "line 3: key 'a' has epoch 1 twice"),
        ("t.csv", "key,epoch,val_acc\na,0,0.5\n", "line 2: epoch must be a whole number >= 1, got 0"),
        ("t.csv", "key,epoch,val_acc,loss\na,1,0.5,1\na,2,0.6,\n", "key 'a': loss is missing for epochs [2]"),
        ("t.csv", "key,val_acc,time\na,0.5,-3\n", "key 'a': time must be seconds >= 0, got -3"),
        ("t.csv", "key,val_acc\na,0.5,7\n", "line 2: more values than the header has columns"),
        ("t.csv", "key,val_acc\n", "the table has no rows"),
        ("t.json", {"a": {"val_acc": [0.1, 0.2], "loss": [1.0]}}, "key 'a': per-epoch curves differ in length (val_acc: 2, loss: 1)"),
        ("t.json", {"a": {"val_acc": [0.1, {"x": 1}]}}, "key 'a': val_acc: expected a number"),
        ("t.json", {"a": 0.5}, "'a': expected a mapping of metrics, got 0.5"),
        ("t.json", "[1, 2]", "row 0: expected a mapping, got 1"),
        ("t.json", "{not json", "not valid JSON"),
        ("t.txt", "key\n", "a table is a .json or .csv file, got '.txt'"),
    ],
)
def test_bad_tables_say_where_and_why(tmp_path, name, text, message):
    path = write(tmp_path, name, text)
    with pytest.raises(TableError) as err:
        LookupTable(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value), str(err.value)


def test_missing_table_names_its_path(tmp_path):
    with pytest.raises(TableError, match=f"no such table file {tmp_path / 'nope.csv'}"):
        LookupTable(tmp_path / "nope.csv")


def test_make_key_formats_config_paths():
    config = {"arch": {"op1": "conv", "width": 64}, "train": {"lr": 0.1}}
    assert make_key("{arch.op1}|{arch.width}|{train.lr}", config) == "conv|64|0.1"
    with pytest.raises(KeyError, match="names 'arch.op9', which the config lacks"):
        make_key("{arch.op9}", config)


def spec(tmp_path, **params):
    write(tmp_path, "t.csv", "key,epoch,val_acc,time\nx,1,0.5,10\nx,2,0.7,10\ny,1,0.4,5\n")
    return {
        "name": "lk",
        "trainable": {"function": "raynas.bench:lookup", "params": {"table": "t.csv", "key": "{arch.op}", **params}},
        "space": {"arch": {"op": {"choice": ["x", "y"]}}},
        "max_epochs": 2,
    }


def test_params_are_checked_and_the_table_read_before_ray_starts(tmp_path):
    s = spec_from_dict(spec(tmp_path, speedup=10), base_dir=str(tmp_path))
    assert s.trainable_params["table"] == str(tmp_path / "t.csv")  # relative to the experiment file
    assert set(s.metrics) >= {"epoch", "val_acc", "sim_time", "wall_time"}
    cases = [
        (spec(tmp_path, table="nope.csv"), f"trainable.params.table: no such table file {tmp_path / 'nope.csv'}"),
        (spec(tmp_path, key="{arch.opp}"), "trainable.params.key: the template names {arch.opp}, which is no key of the space (did you mean 'arch.op'?)"),
        (spec(tmp_path, key="fixed"), "trainable.params.key: the template needs at least one {key.path} placeholder"),
        (spec(tmp_path, sleep="no"), "trainable.params.sleep: expected true or false"),
        (spec(tmp_path, tabel="t.csv"), "trainable.params.tabel: unknown key (did you mean 'table'?)"),
        ({**spec(tmp_path), "objective": {"metric": "acc"}}, "objective.metric: the trainable never reports 'acc'"),
        ({**spec(tmp_path), "trainable": {"params": {}}}, "trainable.function: a trainable mapping needs function"),
        ({**spec(tmp_path), "trainable": {"function": "raynas.bench:lookup", "params": [1]}}, "trainable.params: expected a mapping"),
        ({**spec(tmp_path), "trainable": {"function": "lookup"}}, "trainable.function: expected package.module:function, got 'lookup'"),
    ]
    for raw, message in cases:
        with pytest.raises(ConfigError) as err:
            spec_from_dict(raw, file="x.yaml", base_dir=str(tmp_path))
        assert message in str(err.value) and str(err.value).startswith("x.yaml: "), str(err.value)


def test_a_bad_table_exits_2_naming_file_key_and_row(tmp_path, ray_env):
    (tmp_path / "t.csv").write_text("key,val_acc\na,0.5\na,0.6\n")
    exp = write_yaml(tmp_path / "exp.yaml", {
        "trainable": {"function": "raynas.bench:lookup", "params": {"table": "t.csv", "key": "{arch.op}"}},
        "space": {"arch": {"op": {"choice": ["a"]}}},
        "objective": {"metric": "val_acc"},
    })
    proc = raynas("run", exp, "--storage-path", tmp_path / "r", env=ray_env)
    assert proc.returncode == 2
    assert f"{exp}: trainable.params.table: {tmp_path / 't.csv'}: line 3: key 'a' appears twice" in proc.stderr
    assert not (tmp_path / "r").exists()  # stopped before Ray started


def test_readme_bench_snippets_match_the_example_files():
    import re

    import yaml

    from tests.helpers import ROOT

    readme = (ROOT / "README.md").read_text()
    snippets = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S) if "raynas.bench:" in b]
    assert [s["trainable"]["function"] for s in snippets] == ["raynas.bench:lcbench", "raynas.bench:lookup"]
    lcbench = yaml.safe_load((EXPERIMENTS / "lcbench.yaml").read_text())
    lookup = yaml.safe_load((EXPERIMENTS / "lookup_tiny.yaml").read_text())
    assert snippets[0]["trainable"] == lcbench["trainable"]
    assert {k: snippets[0][k] for k in ("objective", "max_epochs")} == {k: lcbench[k] for k in ("objective", "max_epochs")}
    assert snippets[1]["trainable"] == lookup["trainable"]
    # Both example files validate (the LCBench one needs the shared data and onnxruntime).
    from raynas.spec import load_spec

    assert load_spec(EXPERIMENTS / "lookup_tiny.yaml").space.size() == 16


def test_docs_worked_example_is_the_example_file():
    import re

    import yaml

    from tests.helpers import ROOT

    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", docs, flags=re.S)]
    example = next(b for b in blocks if b.get("name") == "lookup_tiny")
    assert example == yaml.safe_load((EXPERIMENTS / "lookup_tiny.yaml").read_text())
    lcbench = next(b for b in blocks if b["trainable"]["function"] == "raynas.bench:lcbench")
    assert set(lcbench["trainable"]["params"]) == {"task", "speedup"} and lcbench["max_epochs"] == 52
