"""The HTML report: written by `raynas report` and live by `raynas run`, checked in headless
Chromium with the network off (real results folders of experiments/lookup_tiny.yaml)."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from raynas.analysis.report import (
    DATA_FILE,
    REPORT_FILE,
    LiveReport,
    data_script,
    report_data,
)
from raynas.experiment import TrialRecord, read_journal, write_journal
from tests.analysis._chromium import Page, require_chromium, screenshot
from tests.helpers import EXPERIMENTS, ROOT, raynas

PARETO_SETS = ["--set", "objective={metric: [val_acc, params], mode: [max, min]}", "--set", "scheduler.metric=val_acc",
               "--set", "search.num_trials=16", "--name", "lookup_pareto"]
OFF_SETS = ["--set", "search.num_trials=2", "--no-report", "--name", "lookup_off"]
RENDERED = "document.body && document.body.getAttribute('data-render-ms')"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real runs through the console script: lookup_tiny, and the same with two objectives."""
    storage = tmp_path_factory.mktemp("report")
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    try:
        out = {}
        for key, extra in (("tiny", []), ("pareto", PARETO_SETS), ("off", OFF_SETS)):
            proc = raynas("run", EXPERIMENTS / "lookup_tiny.yaml", "--storage-path", storage, "--quiet", *extra,
                          env={"RAY_TMPDIR": ray_tmp})
            assert proc.returncode == 0, proc.stderr[-3000:]
            name = extra[-1] if extra else "lookup_tiny"
            # --quiet: raynas's own lines (the report's path) go to stderr, stdout stays empty.
            assert "refreshes while the search runs" not in proc.stdout, proc.stdout
            out[key] = (storage / name, proc.stderr)
        return out
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def analyze_json(folder: Path, *args: str):
    proc = raynas("analyze", folder, "--format", "json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def fmt(value: float) -> str:
    """As the page (and raynas analyze's table) prints a metric below 100."""
    return f"{value:.4f}"


pytestmark = pytest.mark.ray


def test_run_writes_the_live_report_and_says_where(runs):
    folder, stderr = runs["tiny"]
    assert f"Report: {folder / REPORT_FILE} (refreshes while the search runs)" in stderr
    html = (folder / REPORT_FILE).read_text()
    data = (folder / DATA_FILE).read_text()
    # The final page and data: no longer live, with the run's final status.
    assert '"live":false' in data and '"status":"finished"' in data
    assert '"live":false' in html and "window.RAYNAS_REPORT_DATA" in html
    # Self-contained: no script, style or image is loaded from anywhere else.
    for pattern in ('<script src="http', "<link ", '<img src="http', "@import"):
        assert pattern not in html


def test_no_report_flag(runs):
    folder, stderr = runs["off"]
    assert "Report:" not in stderr and (folder / "trials.json").exists()
    assert not (folder / REPORT_FILE).exists() and not (folder / DATA_FILE).exists()


def test_report_command_and_page_offline_in_chromium(runs, tmp_path):
    require_chromium()
    folder, _ = runs["tiny"]
    target = tmp_path / "out.html"
    proc = raynas("report", folder, "-o", target)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"Report: {target}"
    board = analyze_json(folder)
    ids = [t["trial_id"] for t in board]
    with Page(target.as_uri()) as page:
        page.wait_for(RENDERED)
        assert page.evaluate("window.RAYNAS_ERRORS") == []
        assert page.evaluate("document.getElementById('errors').hidden") is True
        # Every trial, in analyze's order, with analyze's best value on top.
        rows = page.evaluate("Array.from(document.querySelectorAll('#board tbody tr')).map(r => r.dataset.id)")
        assert rows == ids
        cells = page.evaluate("Array.from(document.querySelectorAll('#board tbody tr')[0].cells).map(c => c.textContent)")
        assert fmt(board[0]["best"]) in cells and board[0]["trial_id"] in cells
        assert fmt(board[0]["best"]) in page.evaluate("document.getElementById('summary').textContent")
        # The charts drew: curves (with the stopped trials' marks), best so far twice,
        # parallel coordinates and the importance bars (two searched keys).
        assert page.evaluate("document.querySelectorAll('.js-plotly-plot').length") >= 5
        stopped = [t for t in board if t["status"] == "stopped"]
        traces = page.evaluate("document.getElementById('curves').data.map(t => t.x.length)")
        assert traces[0] == sum(t["epochs"] + 1 for t in board) and traces[1] == len(stopped)
        assert page.evaluate("document.getElementById('parcoords').data[0].dimensions.length") == 3
        assert page.evaluate("document.querySelectorAll('#importance .bars path').length") == 2
        assert page.evaluate("document.getElementById('pareto-card').hidden") is True

        # Sorting by clicking a column: best, highest first; again, lowest first; the trial id.
        best_cells = "Array.from(document.querySelectorAll('#board tbody tr')).map(r => r.cells[5].textContent)"
        page.evaluate("document.querySelector('#board th[data-key=b]').click()")
        values = [float(v) for v in page.evaluate(best_cells)]
        assert values == sorted(values, reverse=True)
        page.evaluate("document.querySelector('#board th[data-key=b]').click()")
        assert [float(v) for v in page.evaluate(best_cells)] == sorted(values)
        page.evaluate("document.querySelector('#board th[data-key=id]').click()")
        assert page.evaluate("Array.from(document.querySelectorAll('#board tbody tr')).map(r => r.dataset.id)") == sorted(ids)

        # The detail of a trial: a click on its row.
        worst = next(t for t in reversed(board) if t["stopped_at"])
        page.evaluate(f"document.querySelector('#board tr[data-id=\"{worst['trial_id']}\"]').click()")
        detail = page.evaluate("document.getElementById('detail').innerText")
        assert f"#{worst['order']} {worst['trial_id']}" in detail
        assert json.dumps(worst["config"]["arch"], indent=1) in detail
        assert "origin" in detail and worst["origin"]["searcher"] in detail
        assert f"stopped at {worst['stopped_at']['epoch']}" in detail
        assert page.evaluate("document.querySelectorAll('#detail .js-plotly-plot').length") == 1
        assert page.evaluate("window.RAYNAS_ERRORS") == []


def test_pareto_front_in_the_report(runs, tmp_path):
    require_chromium()
    folder, _ = runs["pareto"]
    front = analyze_json(folder, "--pareto")
    proc = raynas("report", folder)
    assert proc.returncode == 0, proc.stderr
    first = front["front"][0]["trial_id"]
    with Page((folder / REPORT_FILE).as_uri() + f"#trial={first}") as page:
        page.wait_for(RENDERED)
        assert page.evaluate("window.RAYNAS_ERRORS") == []
        # A link to one trial opens its detail.
        assert first in page.evaluate("document.querySelector('#detail h2').textContent")
        assert page.evaluate("document.getElementById('pareto-card').hidden") is False
        note = page.evaluate("document.getElementById('pareto-note').textContent")
        assert f"{len(front['front'])} of {front['scored']} scored trials on the front" in note
        assert f"hypervolume {fmt(front['hypervolume'])}" in note
        on_plot = page.evaluate("document.getElementById('pareto').data[1].text.map(t => t.split(' ')[1])")
        assert sorted(on_plot) == sorted(f["trial_id"] for f in front["front"])


def test_screenshot_shows_the_charts(runs, tmp_path):
    require_chromium()
    folder, _ = runs["tiny"]
    shot = tmp_path / "report.png"
    screenshot((folder / REPORT_FILE).as_uri(), shot)
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 2300)
    small = image.resize((350, 575))
    colours = small.getcolors(maxcolors=1 << 16)
    # Charts, not a blank or an error page: many colours, and a good part of it not background.
    assert colours is not None and len(colours) > 200
    background = {(255, 255, 255), (246, 247, 249)}
    drawn = sum(n for n, c in colours if c not in background)
    assert drawn > 0.08 * 350 * 575


def test_live_page_picks_up_new_data_and_keeps_its_state(runs, tmp_path):
    require_chromium()
    source, _ = runs["tiny"]
    folder = tmp_path / "live"
    shutil.copytree(source, folder)
    (folder / REPORT_FILE).unlink()
    said: list[str] = []
    live = LiveReport(folder, min_interval=0.2, say=said.append)
    live.start()
    try:
        assert live.announce() is True
        assert said == [f"Report: {folder / REPORT_FILE} (refreshes while the search runs)"]
        with Page((folder / REPORT_FILE).as_uri()) as page:
            page.wait_for(RENDERED)
            assert page.evaluate("document.querySelector('#title .badge').textContent") == "live"
            page.evaluate("document.querySelector('#board th[data-key=id]').click()")
            chosen = page.evaluate("document.querySelector('#board tbody tr').dataset.id")
            page.evaluate("document.querySelector('#board tbody tr').click()")
            before = page.evaluate("document.body.dataset.generated")

            # A new trial appears in the journal, as the driver would write it.
            records = read_journal(folder)
            records["zz000new"] = TrialRecord("zz000new", order=len(records) + 1, config={"arch": {"edge1": "skip", "edge2": "skip"}})
            write_journal(folder, records)
            page.wait_for("!!document.querySelector('#board tr[data-id=zz000new]')", timeout=30)
            assert page.evaluate("document.body.dataset.generated") != before
            # The user's sort order and open detail survive the refresh.
            assert page.evaluate("document.querySelector('#board th.sorted').dataset.key") == "id"
            assert chosen in page.evaluate("document.querySelector('#detail h2').textContent")
            assert page.evaluate("window.RAYNAS_ERRORS") == []

            live.stop()
            assert '"live":false' in (folder / DATA_FILE).read_text()
            page.wait_for("document.querySelector('#title .badge').textContent === 'finished'", timeout=30)
    finally:
        live.stop()
    assert live.child is None


def test_live_report_failures_never_reach_the_run(tmp_path, caplog):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "raynas.json").write_text('{"name": "broken", "status": "running"}')
    (folder / "experiment.yaml").write_text("objective: {metric: val_acc, mode: sideways}\n")
    said: list[str] = []
    live = LiveReport(folder, min_interval=0.1, say=said.append)
    with caplog.at_level(logging.WARNING, logger="raynas"):
        live.start()
        assert live.announce() is False
        live.stop()
    assert said == [] and not (folder / REPORT_FILE).exists() and live.child is None
    assert "the live report could not be written" in caplog.text and "the search goes on" in caplog.text


def test_without_plotly_the_report_says_how_to_get_it(runs, tmp_path, monkeypatch):
    folder, _ = runs["tiny"]
    # A plotly that cannot be imported, first on the path: as if the extra were not installed.
    fake = tmp_path / "site" / "plotly"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named plotly')\n")
    import os

    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}
    proc = raynas("report", folder, "-o", tmp_path / "r.html", env=env)
    assert proc.returncode == 2
    assert "raynas: error: report: the HTML report needs plotly" in proc.stderr
    assert "pip install 'raynas[report]'" in proc.stderr
    assert not (tmp_path / "r.html").exists()

    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.offline", None)
    said: list[str] = []
    live = LiveReport(folder, say=said.append)
    live.start()
    assert live.child is None and live.announce() is False
    live.stop()
    assert len(said) == 1 and "the live report is off" in said[0] and "pip install 'raynas[report]'" in said[0]


def test_report_bad_input(runs, tmp_path):
    folder, _ = runs["tiny"]
    proc = raynas("report", tmp_path)
    assert proc.returncode == 2 and "is not a raynas experiment folder" in proc.stderr
    proc = raynas("report", folder, "-o", tmp_path / "missing" / "r.html")
    assert proc.returncode == 2 and "raynas: error: -o: no such folder" in proc.stderr
    proc = raynas("report", folder, "-o", tmp_path)
    assert proc.returncode == 2 and "is a folder" in proc.stderr


def test_data_is_compact_and_safe_in_a_script_element(runs):
    from raynas.analysis import load_results

    folder, _ = runs["tiny"]
    results = load_results(folder)
    results.trials[0].config["arch"]["note"] = "</script><script>alert(1)</script>"
    results.trials[0].curve[0]["val_acc"] = 0.123456789123
    data = report_data(results, importance={})
    text = data_script(data)
    assert "</script" not in text
    parsed = json.loads(text[len("window.RAYNAS_REPORT_DATA = "):].rstrip().rstrip(";"))
    first = next(t for t in parsed["trials"] if t["id"] == results.trials[0].trial_id)
    assert first["c"]["arch"]["note"] == "</script><script>alert(1)</script>"
    assert first["y"][0] == 0.123457  # 6 significant digits
    assert "\n" not in text.strip() and '", "' not in text  # no indentation, no spaces between items
    assert time.time() * 1000 - parsed["generated"] < 60_000
