"""`raynas submit`: an experiment as a Ray Job on a real head with its dashboard (Job Submission API)."""

import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
import uuid

import pytest

from raynas.experiment import read_journal
from tests.helpers import CONSOLE_SCRIPT, EXPERIMENTS, ROOT, raynas, write_yaml

LOOKUP = EXPERIMENTS / "lookup_tiny.yaml"
README = (ROOT / "README.md").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Runs a head node with its dashboard until its stdin closes; prints the dashboard's port.
HEAD = """
import sys
from ray.cluster_utils import Cluster

port = int(sys.argv[1])
cluster = Cluster(initialize_head=True, head_node_args={
    "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port, "num_cpus": 2})
try:
    print("ready", flush=True)
    sys.stdin.read()
finally:
    cluster.shutdown()
"""


@pytest.fixture(scope="module")
def head():
    """A head node with its dashboard and token authentication, shared by the module's tests.

    The head runs in a process of its own, started with the environment every process must
    agree on (Ray reads RAY_AUTH_MODE once per process, when it is first imported): the head,
    the job's driver (it inherits the head's) and each `raynas submit` get the same token.
    This process only talks to the dashboard's REST API. HOME is a temporary folder, so a
    job's default results folder (~/raynas_results) is expanded there on the head.
    """
    tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    token = uuid.uuid4().hex
    env = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_TMPDIR": tmp,
        "HOME": os.path.join(tmp, "home"),
        # The job runs `raynas run`: the console script must be on the head's PATH, as on a
        # cluster where raynas is installed.
        "PATH": os.path.dirname(CONSOLE_SCRIPT) + os.pathsep + os.environ.get("PATH", ""),
    }
    os.makedirs(env["HOME"])
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # for each `raynas submit` of the tests
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", HEAD, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", "the head did not start"
        yield {"address": f"http://127.0.0.1:{port}", "home": env["HOME"], "token": token}
    finally:
        proc.stdin.close()  # the head shuts its cluster down
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(tmp, ignore_errors=True)


def _api(head, method, path):
    """The dashboard's REST API (what Ray's JobSubmissionClient calls), with the cluster's token."""
    request = urllib.request.Request(
        head["address"] + path, method=method, headers={"Authorization": f"Bearer {head['token']}"},
        data=b"" if method == "POST" else None,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read().decode()
    return json.loads(body) if body.lstrip().startswith(("{", "[")) else body


def _job(head, submission_id) -> dict:
    return _api(head, "GET", f"/api/jobs/{submission_id}")


def _jobs(head) -> set:
    return {j["submission_id"] for j in _api(head, "GET", "/api/jobs/")}


def _logs(head, submission_id) -> str:
    return _api(head, "GET", f"/api/jobs/{submission_id}/logs")["logs"]


def _wait(head, submission_id, timeout=120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = _job(head, submission_id)["status"]
        if status in ("SUCCEEDED", "FAILED", "STOPPED") or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def _submission_id(stdout: str) -> str:
    first = stdout.splitlines()[0]
    assert first.startswith("Submitted "), stdout
    return first.split(" as Ray Job ")[1].split()[0]


def _analyze(folder) -> list:
    proc = raynas("analyze", folder, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.parametrize("follow", [True, False], ids=["follow", "no-follow"])
def test_submit_runs_the_experiment_as_a_named_job(head, tmp_path, follow):
    if follow:
        storage, name, extra = str(tmp_path / "res"), "lookup_tiny", ["--storage-path", tmp_path / "res", "--follow"]
    else:
        # Defaults: results under ~/raynas_results on the head; --name and --set go to the job.
        storage, name = os.path.join(head["home"], "raynas_results"), "tiny4"
        extra = ["--name", name, "--set", "search.num_trials=4"]
    proc = raynas("submit", LOOKUP, "--address", head["address"], *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sid = _submission_id(proc.stdout)
    assert sid.startswith(f"raynas-{name}-"), sid
    for hint in (f"ray job logs --follow --address {head['address']} {sid}", f"ray job status --address {head['address']} {sid}",
                 f"{head['address']}/#/jobs", f"{name} on the head node"):
        assert hint in proc.stdout, proc.stdout
    if follow:
        # The job's own output came back: its trial lines and its final table.
        assert "[12/12] trial" in proc.stdout and f"job {sid} succeeded" in proc.stdout, proc.stdout[-3000:]
    else:
        assert "~/raynas_results" in proc.stdout  # expanded on the head, not here
        # The README shows this output: the same lines, in the same order.
        documented = re.search(r"```\n(Submitted quickstart as Ray Job .*?)```", README, re.DOTALL).group(1).splitlines()
        printed = proc.stdout.splitlines()
        assert [line.split(":")[0] for line in documented[1:]] == [line.split(":")[0] for line in printed[1:len(documented)]]
        assert _wait(head, sid) == "SUCCEEDED", _logs(head, sid)[-3000:]

    job = _job(head, sid)
    assert job["status"] == "SUCCEEDED"
    assert job["metadata"]["raynas_experiment"] == name
    assert job["entrypoint"].startswith("raynas run lookup_tiny.yaml --address auto --storage-path ")
    folder = os.path.join(storage, name)
    rows = _analyze(folder)
    expected = 12 if follow else 4
    assert len(rows) == expected and len(read_journal(folder)) == expected
    assert {r["status"] for r in rows} <= {"completed", "stopped"}
    assert all(r["best"] is not None for r in rows)

    if follow:
        # The same experiment again: its results folder exists on the head, so the job's
        # `raynas run` refuses it, and the job's failure is submit's exit code.
        again = raynas("submit", LOOKUP, "--address", head["address"], *extra)
        assert again.returncode == 1, again.stdout[-3000:] + again.stderr[-3000:]
        assert "exists already" in again.stdout, again.stdout[-3000:]
        assert "ended FAILED: Job entrypoint command failed with exit code 2\n" in again.stderr, again.stderr


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.cluster
def test_a_user_module_beside_the_file_goes_with_the_job(head, tmp_path):
    exp = tmp_path / "exp"
    (exp / "old_results" / "x").mkdir(parents=True)
    (exp / "old_results" / "x" / "raynas.json").write_text("{}")  # a results folder: not uploaded
    (exp / "env").mkdir()
    (exp / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")  # a virtual environment: not uploaded
    (exp / ".git").mkdir()
    (exp / "results").mkdir()  # the file's own (relative) storage_path: not uploaded
    log = tmp_path / "where.jsonl"
    (exp / "mymod.py").write_text(textwrap.dedent(f"""
        import json
        import os

        from ray import tune


        def train(config, context):
            # Workers run in the job's working directory (raynas keeps it: RAY_CHDIR_TO_TRIAL_DIR=0).
            with open({str(log)!r}, "a") as f:
                f.write(json.dumps({{"file": os.path.abspath(__file__), "cwd": os.getcwd(), "files": sorted(os.listdir())}}) + "\\n")
            for epoch in range(1, context.max_epochs + 1):
                tune.report({{"epoch": epoch, "score": config["x"] * epoch}})
    """))
    write_yaml(exp / "mine.yaml", {
        "name": "mine",
        "trainable": "mymod:train",
        "space": {"x": {"choice": [1, 2]}},
        "search": {"searcher": "grid"},
        "objective": {"metric": "score", "mode": "max"},
        "max_epochs": 2,
        "resources": {"cpus_per_trial": 0.5},
        "storage_path": "results",
    })
    proc = raynas("submit", exp / "mine.yaml", "--address", head["address"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # A relative storage_path would be inside the job's temporary folder: the default instead, said once.
    assert "storage_path 'results' in the file is relative" in proc.stderr, proc.stderr
    sid = _submission_id(proc.stdout)
    assert _wait(head, sid) == "SUCCEEDED", _logs(head, sid)[-3000:]
    rows = _analyze(os.path.join(head["home"], "raynas_results", "mine"))
    assert sorted(r["best"] for r in rows) == [2, 4]
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(seen) == 2
    for where in seen:
        # The trials ran in the job's copy of the folder and imported a copy of the module...
        assert where["file"] != str(exp / "mymod.py") and where["cwd"] != str(exp), where
        assert {"mine.yaml", "mymod.py"} <= set(where["files"]), where
        # ... which left out results folders, environments and version control.
        assert not {"old_results", "env", ".git", "results"} & set(where["files"]), where


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.cluster
def test_bad_input_exits_2_and_submits_nothing(head, tmp_path):
    before = _jobs(head)
    bad = write_yaml(tmp_path / "bad.yaml", {"name": "bad", "model": "mlp", "space": {"arch": {"width": {"choise": [32, 64]}}}})
    cases = [
        (["submit", bad, "--address", head["address"]], "choise"),
        (["submit", LOOKUP, "--address", head["address"], "--set", "search.num_trials=-1"], "search.num_trials"),
        (["submit", LOOKUP, "--address", head["address"], "--storage-path", "results"], "--storage-path"),
    ]
    for args, named in cases:
        proc = raynas(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("raynas: error: ") and named in proc.stderr, proc.stderr
        assert "Submitted" not in proc.stdout
    assert _jobs(head) == before


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.cluster
def test_the_cluster_token_is_required_and_named(head):
    before = _jobs(head)
    # Ray's client sends the token only with RAY_AUTH_MODE=token.
    proc = raynas("submit", LOOKUP, "--address", head["address"], env={"RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 2, proc.stderr
    assert "uses token authentication" in proc.stderr and "RAY_AUTH_MODE=token" in proc.stderr, proc.stderr
    proc = raynas("submit", LOOKUP, "--address", head["address"], env={"RAY_AUTH_TOKEN": uuid.uuid4().hex})
    assert proc.returncode == 2, proc.stderr
    assert "refused the authentication token" in proc.stderr, proc.stderr
    assert _jobs(head) == before


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.cluster
def test_a_folder_too_large_to_upload_is_refused_with_its_largest_files(head, tmp_path):
    exp = tmp_path / "big"
    exp.mkdir()
    shutil.copy(LOOKUP, exp)
    shutil.copy(EXPERIMENTS / "lookup_tiny.csv", exp)
    with open(exp / "weights.bin", "wb") as f:  # incompressible, past the dashboard's 100 MiB
        f.writelines(os.urandom(2**20) for _ in range(101))
    before = _jobs(head)
    try:
        proc = raynas("submit", exp / "lookup_tiny.yaml", "--address", head["address"])
    finally:
        (exp / "weights.bin").unlink()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "too large to upload" in proc.stderr and "weights.bin (101.0 MiB)" in proc.stderr, proc.stderr
    assert ".rayignore" in proc.stderr
    assert _jobs(head) == before


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.cluster
def test_ctrl_c_while_following_leaves_the_job_running(head, tmp_path):
    # Slow enough to be running when interrupted: 1 simulated second is 1/5 s.
    proc = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "submit", str(LOOKUP), "--address", head["address"], "--storage-path", str(tmp_path / "res"),
         "--set", "trainable.params.speedup=5", "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    watchdog = threading.Timer(120, proc.kill)  # a job that never starts fails the test, not hangs it
    watchdog.start()
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Running entrypoint"):
                break
        sid = _submission_id("".join(lines))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert f"the job {sid} keeps running" in err, err
    assert _job(head, sid)["status"] == "RUNNING"
    assert _api(head, "POST", f"/api/jobs/{sid}/stop")["stopped"]
    assert _wait(head, sid) == "STOPPED"


# --- no Ray needed ---------------------------------------------------------------------------


def test_without_the_job_client_says_which_extra_to_install(tmp_path):
    # aiohttp (ray[default]) made missing for this process only.
    (tmp_path / "aiohttp.py").write_text("raise ModuleNotFoundError(\"No module named 'aiohttp'\", name='aiohttp')\n")
    path = os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = raynas("submit", LOOKUP, "--address", "http://127.0.0.1:8265", env={"PYTHONPATH": path})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pip install 'raynas[dashboard]'" in proc.stderr and "aiohttp" in proc.stderr, proc.stderr


# --- addresses that are not a dashboard ----------------------------------------


@pytest.fixture
def not_a_dashboard():
    """An HTTP server that is not Ray's dashboard (it answers every request with an error)."""
    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", ["nothing listening", "not a dashboard", "ray client", "no scheme", "auto"])
def test_an_address_that_is_not_a_dashboard_exits_2(kind, not_a_dashboard):
    address = {
        "nothing listening": f"http://127.0.0.1:{_free_port()}",
        "not a dashboard": not_a_dashboard,
        "ray client": "ray://127.0.0.1:10001",
        "no scheme": "127.0.0.1:6379",
        "auto": "auto",
    }[kind]
    proc = raynas("submit", LOOKUP, "--address", address, env={"RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 2, (kind, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raynas: error: --address: "), proc.stderr
    assert "http://HEAD:8265" in lines[0] and address in lines[0], lines[0]
    assert "Submitted" not in proc.stdout

