"""Ray's dashboard during a raynas run, read as a user's browser reads it: trials named in the
Actors, Tasks and Logs views (the dashboard's state API, with Ray's token), and each trial's
metrics on the node's Prometheus endpoint (Ray's metrics agent)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from raynas.experiment import read_journal
from raynas.metrics import GRAFANA_DASHBOARD, METRIC_NAMES

from tests.helpers import CONSOLE_SCRIPT, EXPERIMENTS

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.cluster]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _token() -> str:
    token = os.environ.get("RAY_AUTH_TOKEN")
    if token:
        return token.strip()
    return (Path.home() / ".ray" / "auth_token").read_text().strip()


def _get(url: str, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return r.read().decode("utf-8", "replace")


def _state(base: str, what: str, token: str) -> list[dict]:
    return json.loads(_get(f"{base}/api/v0/{what}?detail=1&limit=10000", token))["data"]["result"]["result"]


# Runs a head in its own process, so that token authentication is on from Ray's first import
# (Ray reads RAY_AUTH_MODE once per process); shut down when a line arrives on its stdin.
HEAD = """
import json, sys
from ray.cluster_utils import Cluster
c = Cluster(initialize_head=True, head_node_args=json.loads(sys.argv[1]))
print(json.dumps({"address": c.address}), flush=True)
sys.stdin.readline()
c.shutdown()
"""


@pytest.fixture
def head():
    """A Ray head with its dashboard and metrics agent, token authentication on (Ray's default
    for a new cluster), started and shut down by this test only."""
    tmp = tempfile.mkdtemp(prefix="rd", dir="/tmp")
    # Ray's metrics reach the agent every 10 s by default; the run is shorter.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_TMPDIR": tmp, "RAY_metrics_report_interval_ms": "500"}
    dash, metrics = _free_port(), _free_port()
    args = {"num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": dash,
            "metrics_export_port": metrics}
    import sys

    proc = subprocess.Popen([sys.executable, "-c", HEAD, json.dumps(args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        address = json.loads(proc.stdout.readline())["address"]
        yield address, env, f"http://127.0.0.1:{dash}", f"http://127.0.0.1:{metrics}/metrics"
    finally:
        try:
            proc.communicate("stop\n", timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _series(text: str, name: str) -> list[dict]:
    """The label sets of the Prometheus series ``name`` in an exposition ``text``."""
    found = []
    for line in text.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
            labels["_value"] = float(m.group(2))
            found.append(labels)
    return found


def test_trials_are_named_and_export_their_metrics_while_a_run_goes(head, tmp_path):
    address, env, dashboard, metrics_url = head
    token = _token()
    name = "dash_run"
    proc = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "run", str(EXPERIMENTS / "lookup_tiny.yaml"), "--address", address, "--quiet",
         "--storage-path", str(tmp_path), "--name", name,
         # ~1.5 s per trial: long enough to be seen running.
         "--set", "search.num_trials=6", "--set", "trainable.params.speedup=6"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    actors: set[tuple[str, str]] = set()
    tasks: set[str] = set()
    scraped: dict[str, list[dict]] = {n: [] for n in METRIC_NAMES}
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                actors |= {(a["class_name"], a.get("repr_name") or "") for a in _state(dashboard, "actors", token)}
                tasks |= {t["name"] for t in _state(dashboard, "tasks", token)}
                text = _get(metrics_url)
                for n in METRIC_NAMES:
                    scraped[n] += _series(text, f"ray_{n}")
            except OSError:
                pass  # the dashboard's state API answers 500 until its first actor exists
            time.sleep(0.5)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    records = [r for r in read_journal(tmp_path / name).values()]
    assert len(records) == 6

    # Actors view: the trial actors carry the experiment's name (Tune's class, ImplicitFunc, stays).
    assert any(cls.endswith("ImplicitFunc") and repr_name == f"raynas_{name}" for cls, repr_name in actors), actors
    # Tasks view: each trial's training tasks name the experiment, its number and its id.
    for rec in records:
        assert f"{name} #{rec.order} {rec.trial_id}.train" in tasks, (rec.trial_id, sorted(tasks))
    # Logs view: each trial wrote its name into the log of the worker it ran on.
    nodes = json.loads(_get(f"{dashboard}/api/v0/nodes?detail=1", token))["data"]["result"]["result"]
    logs = ""
    for node in nodes:
        listing = json.loads(_get(f"{dashboard}/api/v0/logs?node_id={node['node_id']}", token))["data"]["result"]
        for filename in listing.get("worker_out", []):
            query = urllib.parse.urlencode({"node_id": node["node_id"], "filename": filename})
            logs += _get(f"{dashboard}/api/v0/logs/file?{query}", token)
    for rec in records:
        assert f"raynas: trial {rec.trial_id} of {name} starts" in logs, rec.trial_id

    # Metrics: every trial's series, tagged as documented, with the values the journal holds.
    objective = {s["trial"]: s for s in scraped["raynas_trial_objective"] if s.get("experiment") == name}
    for rec in records:
        series = objective.get(rec.trial_id)
        assert series is not None, (rec.trial_id, sorted(objective))
        assert series["number"] == str(rec.order) and series["family"] == "raynas.bench:lookup"
        assert series["metric"] == "val_acc"
    best = {s["trial"]: s["_value"] for s in scraped["raynas_trial_best"] if s.get("experiment") == name}
    for rec in records:  # the last value scraped is the trial's best, or one before it
        assert best[rec.trial_id] <= rec.best + 1e-9
    assert any(s["trial"] for s in scraped["raynas_trial_epoch"] if s.get("experiment") == name)
    statuses = {s["status"] for s in scraped["raynas_trials"] if s.get("experiment") == name and s["_value"] > 0}
    assert "running" in statuses or "completed" in statuses, statuses
    assert scraped["raynas_experiment_best"], "the experiment's best so far was never exported"


def test_grafana_dashboard_queries_only_exported_metrics():
    """Every query of the shipped Grafana dashboard reads a metric raynas exports (Ray's
    Prometheus names: ``ray_`` + the name) and a tag it sets."""
    board = json.loads(Path(GRAFANA_DASHBOARD).read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs.append(next(v for v in board["templating"]["list"] if v["name"] == "experiment")["definition"])
    exported = {f"ray_{n}" for n in METRIC_NAMES}
    for expr in exprs:
        used = set(re.findall(r"\bray_\w+", expr))
        assert used and used <= exported, expr
        for tag in re.findall(r"by \(([^)]*)\)", expr):
            assert {t.strip() for t in tag.split(",")} <= {"experiment", "trial", "number", "family", "metric", "status"}, expr
