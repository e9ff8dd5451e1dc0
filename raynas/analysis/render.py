"""Text renderings of a leaderboard and of a Pareto front: a terminal table, CSV and JSON."""

from __future__ import annotations

from typing import Any

from raynas.analysis.results import ExperimentResults, ParetoResult, TrialResult, dumps
from raynas.experiment import BUDGETS, PROXY_NAMES, SCREENED_FILE, Status
from raynas.progress import fmt_metric
from raynas.spaces import flatten


def varying_keys(trials: list[TrialResult], limit: int | None = 6) -> list[str]:
    """Config keys whose value differs between trials (the ones worth a column).

    A repeated block's keys (``arch.stages.3.kernel``) fold into the list's own key
    (``arch.stages``), shown by :func:`_cell` as its blocks or its length.
    """
    keys: list[str] = []
    for t in trials:
        for k in flatten(t.config):
            parts = k.split(".")
            cut = next((i for i, part in enumerate(parts) if part.isdigit()), len(parts))
            key = ".".join(parts[:cut])
            if key not in keys:
                keys.append(key)
    varying = [k for k in keys if len({repr(config_value(t.config, k)) for t in trials}) > 1]
    return varying[:limit]


def config_value(config: dict, key: str) -> Any:
    """The value at a dotted key of a nested config, or None."""
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _fit(header: list[str], rows: list[list[str]], drop_order: list[int], width: int | None) -> tuple[list[str], list[list[str]], list[str]]:
    """Fits a table into ``width`` characters: leaves out the cost columns no trial has ("-"
    in every row), then, while it is too wide, the columns at the indices of ``drop_order``
    in that order. Returns the header, the rows, and the names of the columns left out for
    the width."""
    if width is None:
        return header, rows, []
    keep = [i for i, h in enumerate(header) if not (h in BUDGETS and all(r[i] == "-" for r in rows))]
    widths = {i: max(len(header[i]), *(len(r[i]) for r in rows)) for i in keep}
    dropped = []
    for i in drop_order:
        if sum(widths[k] for k in keep) + 2 * (len(keep) - 1) <= width:
            break
        if i in keep:
            keep.remove(i)
            dropped.append(header[i])
    return [header[i] for i in keep], [[r[i] for i in keep] for r in rows], dropped


def table(results: ExperimentResults, top: int | None = None, width: int | None = None) -> str:
    """The leaderboard as a text table; ``width`` (a terminal's) drops config columns that
    do not fit, and says which."""
    board = results.leaderboard(top)
    if not board:
        return f"{results.name}: no trials yet"
    cols = varying_keys(board, limit=None if width else 6)
    fixed = ["rank", "#", "trial", "status", "epochs", f"best {results.metric}", "params", "flops", "latency_ms"]
    tested = any(t.test is not None for t in results.trials)
    if tested:  # raynas retrain's scores: test accuracy, mean ± sd over the seeds
        fixed.insert(6, "test_acc")
    proxies = [p for p in PROXY_NAMES if any(p in t.metrics for t in board)]  # when the experiment asked
    fixed += proxies
    header = fixed + [k.split(".", 1)[-1] for k in cols] + ["searcher"]
    orders = {t.trial_id: t.order for t in results.trials}
    rows = []
    for t in board:
        rows.append(
            [
                str(t.rank),
                str(t.order or "-"),
                t.trial_id,
                status_text(t),
                str(t.epochs),
                fmt_metric(t.best),
                *([test_text(t.test)] if tested else []),
                fmt_metric(t.params) if t.params is not None else "-",
                _si(t.flops),
                f"{t.latency_ms:.3f}" if isinstance(t.latency_ms, (int, float)) else "-",
                *(_proxy_text(t.metrics.get(p)) for p in proxies),
            ]
            + [_cell(config_value(t.config, k)) for k in cols]
            + [origin_text(t.origin, orders)]
        )
    # Left out first for a narrow terminal: the searcher, latency and FLOPs, then config keys
    # from the right, then parameters.
    where = {h: i for i, h in enumerate(fixed)}
    config = list(range(len(fixed), len(fixed) + len(cols)))
    order = [len(header) - 1, where["latency_ms"], where["flops"], *reversed(config),
             *(where[p] for p in reversed(proxies)), where["params"]]
    header, rows, dropped = _fit(header, rows, order, width)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    numeric = {i for i, h in enumerate(header)
               if h in ("rank", "#", "epochs", f"best {results.metric}", "test_acc", "params", "flops", "latency_ms", *proxies)}
    fmt_row = lambda r: "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    total = len(results.leaderboard())
    title = f"{results.name}: {total} trial{'s' if total != 1 else ''}, ranked by best {results.metric} ({results.mode})"
    lines = [title, fmt_row(header).rstrip()] + [fmt_row(r).rstrip() for r in rows]
    if dropped:
        note = f"  (not shown for the terminal's width, see --format csv or json: {', '.join(dropped)})"
        lines.append(note if len(note) <= width else note[: width - 4] + "...)")
    failed = [t for t in board if t.error and t.status in (Status.FAILED, Status.REJECTED, Status.ERROR)]
    for t in failed[:5]:
        lines.append(f"  #{t.order} {t.trial_id} {t.status.value}: {t.error}")
    if results.screened:
        proxy, n = results.screened["proxy"], len(results.screened["screened"])
        lines.append(f"prescreen: {n} candidate{'s' if n != 1 else ''} screened out by {proxy} without training "
                     f"({SCREENED_FILE})")
    if results.one_shot:
        lines.append(one_shot_text(results))
    compressed = [(t, c) for t in board for c in t.compressed]
    if compressed:
        lines.append("compressed (raynas compress):")
        lines += [f"  {t.trial_id}: {compressed_text(c)}" for t, c in compressed]
    return "\n".join(lines)


def _proxy_text(value: Any) -> str:
    """A proxy's value in 4 significant digits (synflow spans many orders of magnitude); NaN as ``nan``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.4g}"


def compressed_text(table: dict) -> str:
    """One compressed model: its steps and what they changed."""
    b, a = table["before"], table["after"]

    def change(key: str, fmt) -> str:
        return f"{fmt(b[key])} -> {fmt(a[key])}" if isinstance(b.get(key), (int, float)) and isinstance(a.get(key), (int, float)) else "-"

    return (f"{', '.join(table.get('steps') or [])}: {table.get('split', 'test')} accuracy {change('accuracy', lambda v: f'{v:.4f}')}, "
            f"params {change('params', lambda v: f'{int(v):,}')}, size {change('size_bytes', lambda v: f'{v / 1024:.1f} KiB')}, "
            f"latency {change('latency_ms', lambda v: f'{v:.3f} ms')}")


def test_text(test: dict | None) -> str:
    """A retrained trial's test accuracy: ``mean ± sd (n)``; ``-`` for one not retrained."""
    if not test:
        return "-"
    sd = f" ± {test['sd']:.4f}" if test.get("sd") is not None else ""
    return f"{test['mean']:.4f}{sd} ({test['n']})"


def status_text(trial: TrialResult) -> str:
    """``stopped at 3 (rung 2)`` for a trial the scheduler stopped, else the status."""
    if trial.stopped_at:
        rung = f" (rung {trial.stopped_at['rung']})" if "rung" in trial.stopped_at else ""
        return f"stopped at {trial.stopped_at['epoch']}{rung}"
    return trial.status.value


def origin_text(origin: dict, orders: dict) -> str:
    """Which searcher produced a trial, and how: ``evolution: mutation of #12``."""
    if not origin:
        return "-"
    searcher, how = origin.get("searcher", "?"), origin.get("how", "")
    text = searcher if how in ("", "sample") else f"{searcher}: {how}" if searcher not in how else how
    parent = origin.get("parent")
    if parent and str(parent).startswith("warm:"):  # a member from an earlier search (search.warm_start)
        text += f" of earlier {parent[len('warm:'):]}"
    elif parent:
        text += f" of #{orders.get(parent, parent)}"
    if origin.get("prescreen"):  # search.prescreen: "naswot 812.3, best of 8"
        text += f" ({origin['prescreen']})"
    for event in origin.get("exploits", []):
        text += f"; pbt: took #{orders.get(event['from'], event['from'])} at epoch {event['epoch']}"
    return text


def csv(results: ExperimentResults, top: int | None = None) -> str:
    import json

    frame = results.to_frame(top)
    # Nested values (origin, stopped_at) as JSON, which any CSV reader can parse back.
    return frame.map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v).to_csv(index=False)


def json_list(results: ExperimentResults, top: int | None = None, curves: bool = False) -> str:
    """The leaderboard as a JSON list; with ``curves``, each trial also has ``curve``: its
    per-epoch metrics (:attr:`TrialResult.curve`)."""
    out = []
    for t in results.leaderboard(top):
        row = t.to_json()
        if curves:
            row["curve"] = t.curve
        out.append(row)
    return dumps(out)


def curves_csv(results: ExperimentResults, top: int | None = None) -> str:
    """Learning curves in long format: one row per trial and epoch (leaderboard order, then
    epoch), with ``rank, trial_id, epoch`` and a column per metric any epoch reported. A
    trial that reported no epoch has no row."""
    import json

    import pandas as pd

    rows, metrics = [], {}
    for t in results.leaderboard(top):
        for point in t.curve:
            rows.append({"rank": t.rank, "trial_id": t.trial_id, **point})
            metrics.update(dict.fromkeys(k for k in point if k != "epoch"))
    columns = ["rank", "trial_id", "epoch", *metrics]
    # object: an int metric stays an int in a column where some epochs lack it.
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    # As in csv(): a nested value as JSON.
    return frame.map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v).to_csv(index=False)


def _si(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(int(value))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        # A repeated block: its blocks when short (3 stages: "16/3/T 32/5/F 64/3/T"), else its length.
        text = " ".join("/".join(_short(v) for v in item.values()) if isinstance(item, dict) else _short(item) for item in value)
        return text if len(text) <= 32 else f"[{len(value)}]"
    return str(value)


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "T" if value else "F"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def pareto_table(results: ExperimentResults, front: ParetoResult, top: int | None = None) -> str:
    """The front's trials, best on the first objective first, and how its hypervolume was taken."""
    objectives = ", ".join(f"{m} ({mode})" for m, mode in zip(front.metrics, front.modes))
    if not front.scored:
        return f"{results.name}: no trial has a value for every objective ({objectives}) yet"
    shown = front.front[:top] if top else front.front
    # Config columns that vary over the whole experiment, so a one-trial front still shows them.
    cols = varying_keys(results.trials)
    header = ["rank", "#", "trial", "status", "epoch"] + front.metrics + [k.split(".", 1)[-1] for k in cols]
    rows = []
    for f in shown:
        rows.append(
            [str(f.rank), str(f.trial.order or "-"), f.trial.trial_id, f.trial.status.value, str(f.epoch or "-")]
            + [_objective_cell(m, f.objectives[m]) for m in front.metrics]
            + [_cell(config_value(f.trial.config, k)) for k in cols]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    numeric = set(range(len(front.metrics) + 5)) - {2, 3}
    fmt_row = lambda r: "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    size = len(front.front)
    title = f"{results.name}: Pareto front of {objectives}: {size} of {front.scored} scored trial{'s' if front.scored != 1 else ''}"
    if front.unscored:
        title += f" ({front.unscored} more not scored: failed, errored, or missing an objective)"
    lines = [title, fmt_row(header)] + [fmt_row(r) for r in rows]
    if top and size > top:
        lines.append(f"  ... {size - top} more on the front")
    lines.append(_hypervolume_line(front))
    return "\n".join(lines)


def _hypervolume_line(front: ParetoResult) -> str:
    ref = ", ".join(f"{m} {v:.6g}" for m, v in zip(front.metrics, front.reference or []))
    line = (
        f"hypervolume {front.hypervolume:.4f}: objectives scaled to 0 (best) .. 1 (worst) "
        f"over the {front.scored} scored trials; "
    )
    if front.reference_given:
        scaled = ", ".join(f"{v:.4g}" for v in front.reference_normalised or [])
        return line + f"given reference {ref} (scaled: {scaled}); in the metrics' own units {front.hypervolume_raw:.6g}"
    return line + f"reference {front.reference_normalised[0]:g} on each ({ref})"


def pareto_csv(results: ExperimentResults, front: ParetoResult, top: int | None = None) -> str:
    """One row per front trial: rank, trial, its objectives, then its flattened config."""
    import pandas as pd

    rows = []
    for f in front.front[:top] if top else front.front:
        row = {"rank": f.rank, "order": f.trial.order, "trial_id": f.trial.trial_id, "status": f.trial.status.value, "epoch": f.epoch}
        row.update(f.objectives)
        row.update({f"config.{k}": v for k, v in flatten(f.trial.config).items()})
        rows.append(row)
    columns = ["rank", "order", "trial_id", "status", "epoch", *front.metrics]
    return pd.DataFrame(rows, columns=None if rows else columns).to_csv(index=False)


def pareto_json(results: ExperimentResults, front: ParetoResult, top: int | None = None) -> str:
    """The whole :class:`ParetoResult` (``--top`` shortens only the list of trials)."""
    out = front.to_json()
    if top:
        out["front"] = out["front"][:top]
    return dumps(out)


def _objective_cell(metric: str, value: Any) -> str:
    if metric == "flops":
        return _si(value)
    return fmt_metric(value)


def importance(result, fmt: str = "table") -> str:
    """An :class:`~raynas.analysis.importance.Importance` as a table, JSON or CSV (one row
    per rated key, then the keys left out with an empty importance and why)."""
    if fmt == "json":
        return dumps(result.to_json())
    rows = [(k, f"{v:.4f}", "") for k, v in result.importances.items()]
    rows += [(k, "", why) for k, why in result.left_out.items()]
    if fmt == "csv":
        import csv as csv_module
        import io

        buf = io.StringIO()
        writer = csv_module.writer(buf, lineterminator="\n")
        writer.writerow(["key", "importance", "left_out"])
        writer.writerows(rows)
        return buf.getvalue()
    title = (f"importance of each searched key for best {result.metric} ({result.mode}): "
             f"Optuna's {result.evaluator} evaluator over {result.trials} scored trial{'s' if result.trials != 1 else ''}")
    lines = [title]
    if result.importances:
        width = max(len(k) for k in result.importances)
        for key, value in result.importances.items():
            lines.append(f"  {key:<{width}}  {value:6.3f}  {'#' * round(value * 30)}")
    for key, why in result.left_out.items():
        lines.append(f"  not rated: {key}: {why}")
    lines += [f"  note: {note}" for note in result.notes]
    return "\n".join(lines)


def one_shot_text(results) -> str:
    """What a one-shot or gradient search's stages did and cost (``analyze`` and the report)."""
    o = results.one_shot
    if o["strategy"] == "gradient":
        # A cell's derived arch has edges; an mbconv network's, stages of layers.
        what, free = (("cell", "edges chose skip") if "edges" in (o.get("derived") or {})
                      else ("network", "layers chose identity or skip"))
        return (f"gradient: the {what} was derived from the supernet's architecture weights after {o['epochs']} epochs "
                f"in {o['supernet_s']:.1f} s ({o['folder']}; {o.get('skip_edges')} {free}, "
                f"{o.get('skip_edges_kept')} kept), then trained as a trial")
    workers = o.get("workers", 1)
    parallel = f" on {workers} workers ({o['supernet_worker_s']:.1f} worker-s)" if workers > 1 else ""
    return (f"one-shot: {results.metric} is each subnet's score with the supernet's weights, not a training; "
            f"supernet {o['epochs']} epochs in {o['supernet_s']:.1f} s{parallel} ({o['folder']}), "
            f"{o['scored']} subnets scored in {o['scoring_s']:.1f} s of trials; "
            f"train the best from scratch with raynas retrain {results.dir} --top 3")
