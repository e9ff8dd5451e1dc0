"""``raynas run | resume | submit | validate | analyze | tensorboard | report | retrain | export | compress``.

Exit codes: 0 success, 1 an error (also: a search in which no trial scored the objective), 2 bad input (nothing started, nothing
changed), 130 interrupted (resume it with ``raynas resume DIR``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from raynas import __version__
from raynas.errors import ConfigError, ResumeError, SearchFailedError

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raynas",
        description="Neural architecture search from one YAML file, on Ray Tune.",
    )
    p.add_argument("--version", action="version", version=f"raynas {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cluster_args(sp):
        sp.add_argument("--address", help="join this Ray cluster (host:port or 'auto'); default: start a local Ray")
        sp.add_argument("--dashboard", action="store_true", help="also start Ray's dashboard on 127.0.0.1 (needs raynas[dashboard])")
        sp.add_argument("--quiet", action="store_true", help="no trial table")
        sp.add_argument("--verbose", action="store_true", help="show Ray's and the workers' logs")
        sp.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
        sp.add_argument("--no-metrics", dest="metrics", action="store_false",
                        help="do not export trial metrics through Ray's metrics API (Prometheus, Grafana)")
        sp.add_argument("--no-report", dest="report", action="store_false",
                        help="do not keep the HTML report (report.html) in the results folder while the search runs")

    run = sub.add_parser("run", help="run an experiment file", description="Run a NAS experiment described in FILE.")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--name", help="experiment name (default: the file's `name`)")
    run.add_argument("--storage-path", help="parent folder of results (default: ./raynas_results)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a value of the file (YAML value), e.g. --set search.num_trials=8")
    cluster_args(run)

    res = sub.add_parser("resume", help="continue an interrupted experiment", description="Continue the experiment in DIR.")
    res.add_argument("dir", metavar="DIR")
    cluster_args(res)

    sbm = sub.add_parser("submit", help="run an experiment file on a Ray cluster as a Ray Job",
                         description="Submit the experiment in FILE to a Ray cluster as a Ray Job; its folder goes along "
                                     "as the job's working directory and the driver runs on the head.")
    sbm.add_argument("file", metavar="FILE")
    sbm.add_argument("--address", required=True, metavar="http://HEAD:8265", help="the head's Ray dashboard")
    sbm.add_argument("--name", help="experiment name (default: the file's `name`)")
    sbm.add_argument("--storage-path", help="parent folder of results on the head, absolute or ~/... (default: ~/raynas_results)")
    sbm.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a value of the file (YAML value), also in the job")
    sbm.add_argument("--follow", action="store_true", help="stream the job's logs and exit with its outcome")

    val = sub.add_parser("validate", help="check an experiment file without starting Ray")
    val.add_argument("file", metavar="FILE")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")

    ana = sub.add_parser("analyze", help="rank the trials of an experiment folder, or show its Pareto front (no Ray needed)")
    ana.add_argument("dir", metavar="DIR")
    ana.add_argument("--top", type=int, default=None, help="show the N best trials")
    ana.add_argument("--format", choices=("table", "csv", "json"), default="table")
    ana.add_argument("--all", action="store_true", help="include trials lost to a crash (superseded on resume)")
    ana.add_argument("--pareto", action="store_true",
                     help="the Pareto front of the experiment's objectives (objective.metric a list) and its hypervolume")
    ana.add_argument("--objectives", metavar="METRIC:MODE,...",
                     help="with --pareto: these metrics instead of the experiment's objectives, e.g. val_acc:max,params:min")
    ana.add_argument("--reference", metavar="VALUE,...",
                     help="with --pareto: hypervolume reference point, one value per objective in its own units "
                          "(default: 10%% beyond the worst scored trial on each; a negative first value: --reference=-1,5)")
    ana.add_argument("--curves", action="store_true",
                     help="with --format json or csv: every trial's per-epoch metrics (csv: one row per trial and epoch)")
    ana.add_argument("--importance", action="store_true",
                     help="how much each searched key explains the objective (Optuna's fANOVA over the scored trials)")

    tb = sub.add_parser("tensorboard", help="write TensorBoard event files of every trial (no Ray needed)",
                        description="Write TensorBoard event files of every trial in DIR: per-epoch scalars and the HParams table.")
    tb.add_argument("dir", metavar="DIR")
    tb.add_argument("--logdir", metavar="OUT", help="where to write (default: DIR/tensorboard); replaces what an earlier run wrote there")

    rt = sub.add_parser("retrain", help="train the best architectures again from scratch, several seeds each, and score the test split",
                        description="Train the K best configurations of the search in DIR again from scratch, S seeds each, as "
                                    "Ray Tune trials, and report test accuracy as mean ± sd per architecture. The results go "
                                    "to DIR/retrain; running the command again continues an unfinished retrain.")
    rt.add_argument("dir", metavar="DIR")
    rt.add_argument("--top", type=int, default=3, metavar="K", help="how many of the best configurations (default 3)")
    rt.add_argument("--seeds", type=int, default=3, metavar="S", help="trainings of each, with seeds 0..S-1 (default 3)")
    rt.add_argument("--epochs", type=int, default=None, metavar="N", help="epochs of each training (default: the search's max_epochs)")
    rt.add_argument("--full-data", action="store_true", help="train on train + validation (the test split stays held out)")
    cluster_args(rt)

    def trial_args(sp):
        which = sp.add_mutually_exclusive_group()
        which.add_argument("--trial", metavar="ID", help="this trial (an id as raynas analyze shows it, or its unique start)")
        which.add_argument("--rank", type=int, metavar="N", help="the trial at this rank (default: 1, the best)")

    def format_args(sp):
        sp.add_argument("--format", default="state_dict", choices=("state_dict", "torchscript", "onnx"),
                        help="state_dict (raynas.load_model rebuilds the model), torchscript, onnx (needs raynas[export]); "
                             "default state_dict")
        sp.add_argument("-o", "--output", metavar="PATH", help="where to write")

    exp = sub.add_parser("export", help="write a trial's model as one file: weights, arch, preprocessing, classes, metrics",
                         description="Write the model of a trial of DIR (default: the best) as one artifact that "
                                     "raynas.load_model(PATH) turns back into a model with predict() on raw inputs.")
    exp.add_argument("dir", metavar="DIR")
    trial_args(exp)
    format_args(exp)

    cmp = sub.add_parser("compress", help="prune (magnitude or channels), fine-tune and quantize a trial's model; "
                                          "print and store a before/after table",
                         description="Prune, fine-tune and quantize the model of a trial of DIR (default: the best) and "
                                     "measure parameters, non-zero parameters, size, CPU latency per sample and test "
                                     "accuracy before and after. Each result goes to DIR/compressed as an artifact.")
    cmp.add_argument("dir", metavar="DIR")
    trial_args(cmp)
    cmp.add_argument("--top", type=int, metavar="K", help="the K best trials (of the Pareto front for several objectives)")
    cmp.add_argument("--prune", type=float, metavar="AMOUNT", help="share of the weights (or with --structured, of the channels) to remove, in (0, 1)")
    cmp.add_argument("--structured", action="store_true", help="remove whole channels and neurons, so that layers shrink")
    cmp.add_argument("--quantize", metavar="int8|fp16", help="post-training quantization: int8 (static for conv nets where "
                                                              "possible, dynamic for linear layers) or fp16")
    cmp.add_argument("--finetune-epochs", type=int, default=0, metavar="N", help="train N epochs after pruning (default 0)")
    format_args(cmp)

    rep = sub.add_parser("report", help="write the experiment's HTML report (one offline file; needs raynas[report])",
                         description="Write one self-contained HTML report of the experiment in DIR.")
    rep.add_argument("dir", metavar="DIR")
    rep.add_argument("-o", "--output", metavar="FILE", help="where to write it (default: DIR/report.html)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {"run": _run, "resume": _resume, "submit": _submit, "validate": _validate, "analyze": _analyze,
                    "tensorboard": _tensorboard, "report": _report, "retrain": _retrain,
                    "export": _export, "compress": _compress}
        return commands[args.command](args)
    except ConfigError as err:
        print(f"raynas: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SearchFailedError as err:
        print(f"raynas: error: the search failed: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nraynas: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `raynas analyze DIR | head`: the reader left; stop quietly, as other CLI tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _options(args):
    from raynas.runner import RunOptions

    return RunOptions(
        name=getattr(args, "name", None),
        storage_path=getattr(args, "storage_path", None),
        address=args.address,
        dashboard=args.dashboard,
        progress=not args.quiet,
        verbose=args.verbose,
        num_cpus=args.num_cpus,
        metrics=args.metrics,
        report=getattr(args, "report", True),
    )


def _check_dashboard(args) -> None:
    if not args.dashboard:
        return
    # The dashboard's server needs ray[default]'s packages; fail before anything starts.
    from raynas._tune.workers import dashboard_dependency_error

    error = dashboard_dependency_error()
    if error is not None:
        raise ConfigError(
            "--dashboard",
            f"Ray's dashboard needs packages that are not installed ({error}); "
            "install them with: pip install 'raynas[dashboard]'",
        )


def _finish(exp_dir) -> int:
    """Prints the best trials; an unfinished search (Ctrl-C: Tune stops gracefully and
    returns) exits 130 with the command that continues it."""
    from raynas.analysis import load_results
    from raynas.analysis.render import table

    results = load_results(exp_dir)
    print()
    print(table(results, top=5, width=_terminal_width()))
    print(f"\nResults: {exp_dir}\nRank them: raynas analyze {exp_dir}")
    from raynas.analysis.report import REPORT_FILE

    if (Path(exp_dir) / REPORT_FILE).is_file():
        print(f"Report: {Path(exp_dir) / REPORT_FILE}")
    return _exit_code(exp_dir, "search", f"raynas resume {exp_dir}")


def _exit_code(folder, what: str, again: str) -> int:
    """0 for a finished run; 130, saying how to continue, for one that stopped before its end
    (Ctrl-C: Tune stops gracefully and returns)."""
    from raynas.experiment import RunStatus, run_status

    if run_status(folder) is not RunStatus.FINISHED:
        print(f"raynas: the {what} stopped before its end; continue it with: {again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _run(args) -> int:
    from raynas.spec import load_spec
    from raynas.runner import experiment_dir, run

    spec = load_spec(args.file, args.overrides)
    _check_dashboard(args)
    opts = _options(args)
    exp_dir = experiment_dir(spec, opts)
    try:
        run(spec, opts, overrides=args.overrides)
    except KeyboardInterrupt:
        print(f"\nraynas: interrupted; continue with: raynas resume {exp_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _finish(exp_dir)


def _resume(args) -> int:
    from raynas.experiment import RunStatus, run_status
    from raynas.runner import resume

    if run_status(args.dir) is RunStatus.FINISHED:
        print(f"raynas: {args.dir} finished already; nothing to resume. Rank it with: raynas analyze {args.dir}")
        return EXIT_OK
    _check_dashboard(args)
    exp_dir, code = _continuing(lambda: resume(args.dir, _options(args)), f"raynas resume {args.dir}")
    return code if exp_dir is None else _finish(exp_dir)


def _continuing(call, again: str):
    """``(call(), None)``, or ``(None, exit code)`` after Ctrl-C (saying ``again`` continues it)
    or a resume that cannot go on."""
    try:
        return call(), None
    except KeyboardInterrupt:
        print(f"\nraynas: interrupted; continue with: {again}", file=sys.stderr)
        return None, EXIT_INTERRUPTED
    except ResumeError as err:
        print(f"raynas: error: {err}", file=sys.stderr)
        return None, EXIT_ERROR


def _retrain(args) -> int:
    from raynas.winner.folder import check_experiment
    from raynas.winner.retrain import render_summary, retrain, summary

    exp_dir = check_experiment(args.dir)
    _check_dashboard(args)
    target, code = _continuing(
        lambda: retrain(exp_dir, top=args.top, seeds=args.seeds, epochs=args.epochs, full_data=args.full_data,
                        opts=_options(args)),
        f"raynas retrain {args.dir} (the same options)")
    if target is None:
        return code
    from raynas.analysis import load_results

    print()
    print(render_summary(summary(target), load_results(exp_dir).metric))
    print(f"\nResults: {target}\nExport the best: raynas export {target} --rank 1 -o model.pt")
    return _exit_code(target, "retrain", f"raynas retrain {args.dir}")


def _export(args) -> int:
    from raynas.winner.export import export

    path = export(args.dir, trial=args.trial, rank=args.rank, fmt=args.format, output=args.output)
    print(f"Exported: {path}\nLoad it: raynas.load_model({str(path)!r}).predict(inputs)")
    return EXIT_OK


def _compress(args) -> int:
    from raynas.winner.compress_trials import compress

    compress(args.dir, trial=args.trial, rank=args.rank, top=args.top, prune=args.prune, structured=args.structured,
             quantize=args.quantize, finetune_epochs=args.finetune_epochs, fmt=args.format, output=args.output)
    return EXIT_OK


def _submit(args) -> int:
    from raynas import submit

    sub = submit.submit(args.file, args.address, args.overrides, name=args.name, storage_path=args.storage_path)
    for note in sub.notes:
        print(f"raynas: note: {note}", file=sys.stderr)
    print(submit.how_to_follow(sub), flush=True)
    if not args.follow:
        return EXIT_OK
    try:
        status = submit.follow(sub)
    except KeyboardInterrupt:
        print(f"\nraynas: stopped following; the job {sub.submission_id} keeps running "
              f"(stop it with: ray job stop --address {sub.address} {sub.submission_id})", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - the log stream or the dashboard went away; the job may go on
        print(f"raynas: error: lost the job's logs ({type(err).__name__}: {err}); it may still be running: "
              f"ray job status --address {sub.address} {sub.submission_id}", file=sys.stderr)
        return EXIT_ERROR
    if status == submit.SUCCEEDED:
        print(f"raynas: job {sub.submission_id} succeeded; results in {sub.results} on the head")
        return EXIT_OK
    print(f"raynas: error: job {sub.submission_id} ended {status}: {submit.job_message(sub)}", file=sys.stderr)
    return EXIT_ERROR


def _budgets(constraints) -> str:
    return ", ".join(f"{name} <= {limit:,}" for name, limit in constraints.limits().items() if limit is not None)


def _validate(args) -> int:
    from raynas.spec import load_spec
    from raynas.runner import preflight

    spec = load_spec(args.file, args.overrides)
    notes: list[str] = []
    dataset = preflight(spec, notes)  # loads the data and builds sampled architectures
    from raynas.runner import warm_priors

    _, warm_lines, _ = warm_priors(spec)  # reads the earlier folders: a bad one is refused here too
    data = spec.data.source if spec.data else "none"
    if dataset is not None:
        shape = "x".join(map(str, dataset.input_shape))
        test = f"{len(dataset.x_test):,} test" if dataset.has_test else "no test split"
        data += (f" ({len(dataset.x_train):,} train, {len(dataset.x_val):,} val, {test}, input {shape}, "
                 f"{dataset.num_classes} classes)")
    what = f"trainable {spec.trainable}" if spec.trainable else f"model {spec.model}"
    sched = spec.scheduler.name + "".join(f" {k}={v}" for k, v in spec.scheduler.options.items() if v is not None)
    print(f"{args.file}: ok")
    print(f"  name:       {spec.name}")
    print(f"  {what.split()[0] + ':':<11} {what.split()[1]}   data: {data}")
    print(f"  space:      {spec.space.describe_size()}")
    # The searcher's parameters as they will be used: some defaults are derived (evolution's from num_trials).
    options = " ".join(f"{k}={v}" for k, v in spec.search.options.items())
    if spec.search.strategy == "one-shot":
        o = spec.search.one_shot
        # A transformer normalises with LayerNorm (per token): no running statistics to recompute.
        calibration = ("no batch norm to recalibrate" if spec.model == "transformer"
                       else f"batch norm recalibrated on {o['calibration_batches']} batches")
        print(f"  one-shot:   a supernet trains {o['supernet_epochs']} epochs, then {spec.num_trials} subnets are scored "
              f"with its weights ({calibration})")
        print(f"  search:     {spec.search.searcher} proposes the subnets; max_epochs {spec.max_epochs} is for raynas retrain"
              + (f"; {options}" if options else ""))
    elif spec.search.strategy == "gradient":
        g = spec.search.gradient
        print(f"  gradient:   a DARTS supernet trains {g['supernet_epochs']} epochs (arch_lr {g['arch_lr']:g}, "
              f"max_skip {g['max_skip']}), then the {'cell' if spec.model == 'cell' else 'network'} it derives trains "
              f"{spec.max_epochs} epochs")
    else:
        print(f"  search:     {spec.search.searcher}, {spec.num_trials} trials, max_epochs {spec.max_epochs}"
              + (f"; {options}" if options else ""))
    if spec.search.points:
        print(f"  points:     {len(spec.search.points)} given configurations first")
    for line in warm_lines:
        print(f"  {line}")
    print(f"  scheduler:  {sched}")
    objectives = ", ".join(f"{m.value} {name}" for name, m in zip(spec.objective.metrics, spec.objective.modes))
    print(f"  objective:  {objectives}" + ("" if not spec.constraints else f"   constraints: {_budgets(spec.constraints)}"))
    if spec.proxies:
        print(f"  proxies:    {', '.join(spec.proxies)} (computed before training, reported as metrics)")
    res = spec.resources
    line = f"{res.cpus_per_trial:g} CPU, {res.gpus_per_trial:g} GPU per trial"
    if res.workers_per_trial > 1:
        line = (f"the supernet on {res.workers_per_trial} data-parallel Ray Train workers of {res.cpus_per_trial:g} CPU, "
                f"{res.gpus_per_trial:g} GPU each; subnets {line}")
    print(f"  resources:  {line}")
    for note in notes:
        print(f"raynas: warning: {note}", file=sys.stderr)
    return EXIT_OK


def _analyze(args) -> int:
    from raynas.analysis import load_results
    from raynas.analysis import render

    if args.top is not None and args.top < 1:
        raise ConfigError("--top", f"must be >= 1, got {args.top}")
    results = load_results(args.dir)
    if not args.all:
        from raynas.experiment import Status

        results.trials = [t for t in results.trials if t.status is not Status.LOST]
    if args.curves and (args.pareto or args.importance or args.format == "table"):
        got = "--pareto" if args.pareto else "--importance" if args.importance else "--format table"
        raise ConfigError("--curves", f"applies to the leaderboard's --format json and --format csv, not to {got}")
    if args.pareto and args.importance:
        raise ConfigError("--importance", "give --importance or --pareto, not both")
    if args.importance:
        if args.top is not None or args.objectives is not None or args.reference is not None:
            flag = "--top" if args.top is not None else "--objectives" if args.objectives is not None else "--reference"
            raise ConfigError(flag, "does not apply to --importance")
        from raynas.analysis.importance import importance

        out = render.importance(importance(results), args.format)
    elif args.pareto:
        out = _pareto(args, results)
    else:
        for flag in ("objectives", "reference"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag}", "applies to a Pareto front only; add --pareto")
        if args.format == "table":
            out = render.table(results, args.top, width=_terminal_width())
        elif args.curves:
            out = {"csv": render.curves_csv, "json": lambda r, top: render.json_list(r, top, curves=True)}[args.format](results, args.top)
        else:
            out = {"csv": render.csv, "json": render.json_list}[args.format](results, args.top)
    print(out if out.endswith("\n") else out + "\n", end="")
    return EXIT_OK


def _tensorboard(args) -> int:
    import importlib.util
    import shlex

    from raynas.analysis.tensorboard import write_tensorboard

    try:
        logs = write_tensorboard(args.dir, args.logdir)
    except ConfigError as err:
        if err.path != "logdir":
            raise
        raise ConfigError("--logdir", err.message) from None
    print(f"Wrote TensorBoard files of {len(logs.runs)} trial{'s' if len(logs.runs) != 1 else ''} to {logs.logdir}")
    if logs.removed:
        print(f"Removed the event files of {len(logs.removed)} trial{'s' if len(logs.removed) != 1 else ''} no longer in {args.dir}")
    print(f"View them: tensorboard --logdir {shlex.quote(str(logs.logdir))}")
    if importlib.util.find_spec("tensorboard") is None:
        print("raynas: warning: viewing the files needs the tensorboard package, which is not installed: "
              "pip install 'raynas[tensorboard]'", file=sys.stderr)
    return EXIT_OK


def _report(args) -> int:
    from raynas.analysis.report import write_report

    path = write_report(args.dir, args.output)
    print(f"Report: {path}")
    return EXIT_OK


def _terminal_width() -> int | None:
    """The terminal's width when printing to one; None (no limit) into a pipe or file."""
    import shutil

    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def _pareto(args, results) -> str:
    from raynas.analysis import render

    metrics = modes = None
    if args.objectives is not None:
        metrics, modes = _parse_objectives(args.objectives)
    elif len(results.metrics) < 2:
        raise ConfigError(
            "--pareto",
            f"{results.name} has one objective ({results.metric}); a Pareto front needs two or more: "
            "give objective.metric a list in the experiment file, e.g. objective: {metric: [val_acc, params], mode: [max, min]}, "
            "or pick metrics with --objectives val_acc:max,params:min",
        )
    reference = None
    if args.reference is not None:
        reference = []
        for part in args.reference.split(","):
            try:
                reference.append(float(part))
            except ValueError:
                raise ConfigError("--reference", f"expected numbers separated by commas, got {part.strip()!r} in {args.reference!r}") from None
    try:
        front = results.pareto(metrics, modes, reference=reference, include_lost=args.all)
    except ConfigError as err:
        # Name the flag the bad value came from (a metric no trial reported, a short reference).
        flag = {"metrics": "--objectives", "reference": "--reference"}.get(err.path)
        if flag is None:
            raise
        raise ConfigError(flag, err.message) from None
    render_front = {"table": render.pareto_table, "csv": render.pareto_csv, "json": render.pareto_json}[args.format]
    return render_front(results, front, args.top)


def _parse_objectives(text: str) -> tuple[list[str], list[str]]:
    """``val_acc:max,params:min`` -> ``(["val_acc", "params"], ["max", "min"])``."""
    metrics, modes = [], []
    for part in text.split(","):
        metric, sep, mode = part.strip().partition(":")
        metric, mode = metric.strip(), mode.strip()
        if not metric or not sep:
            raise ConfigError("--objectives", f"expected METRIC:MODE pairs separated by commas (val_acc:max,params:min), got {part.strip()!r}")
        if mode not in ("max", "min"):
            raise ConfigError("--objectives", f"{metric}: mode must be 'max' or 'min', got {mode!r}")
        if metric in metrics:
            raise ConfigError("--objectives", f"{metric!r} is listed twice; list each metric once")
        metrics.append(metric)
        modes.append(mode)
    if len(metrics) < 2:
        raise ConfigError("--objectives", f"a Pareto front needs two or more objectives, got {text!r}")
    return metrics, modes


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
