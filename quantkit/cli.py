"""The ``quantkit`` command line: parses arguments, calls the API, renders results and errors.

This is the only module that configures logging. Every quantkit error becomes a
short message and an exit code (2: bad input, 1: failure); ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from ._version import __version__
from .errors import QuantkitError

app = typer.Typer(
    name="quantkit",
    help="Hardware-aware quantization of Hugging Face models for x86 CPUs.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

_state: dict[str, Any] = {"debug": False}

#: Third-party loggers that are chatty at INFO/WARNING about things users cannot act on.
_NOISY = ("torchao", "torch", "torch.utils._pytree", "torch.onnx", "neural_compressor", "transformers", "optimum", "onnxruntime", "root", "datasets", "evaluate", "urllib3")


def _configure_logging(verbose: int, debug: bool) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = RichHandler(console=err, show_path=debug, show_time=debug, rich_tracebacks=debug)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("quantkit").setLevel(level)
    if not debug:
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("LOGLEVEL", "WARNING")  # Intel Neural Compressor's logger reads this at import
        os.environ.setdefault("TQDM_MININTERVAL", "1")


def _fail(exc: BaseException) -> NoReturn:
    if _state["debug"]:
        raise exc
    if isinstance(exc, QuantkitError):
        err.print(f"[bold red]error:[/] {exc.title}", highlight=False)
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        if exc.hint:
            err.print(f"hint: {exc.hint}", markup=False, highlight=False, style="yellow", soft_wrap=True)
        raise typer.Exit(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        err.print("interrupted")
        raise typer.Exit(130)
    err.print(f"[bold red]error:[/] unexpected {type(exc).__name__}", highlight=False)
    err.print(str(exc) or repr(exc), markup=False, highlight=False, soft_wrap=True)
    err.print("hint: rerun with --debug for the traceback, and report it if it looks like a bug", style="yellow")
    raise typer.Exit(1)


def _version(value: bool) -> None:
    if value:
        out.print(f"quantkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, metavar="", help="Print the version and exit.")
    ] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="Show progress logs.")] = 0,
    debug: Annotated[bool, typer.Option("--debug", metavar="", help="Debug logs and full tracebacks.")] = False,
) -> None:
    _state["debug"] = debug
    _state["fast_exit"] = False
    _configure_logging(verbose, debug)


def _load(config: Path, model: str | None) -> Any:
    from .specio import load_spec, with_overrides

    spec = load_spec(config)
    if model is not None:
        local = Path(model).expanduser()
        spec = with_overrides(spec, **{"model.name_or_path": str(local.resolve()) if local.exists() else model})
    return spec


def _print_trial(trial: Any, ctx: Any) -> None:
    from .search.report import describe_config

    verdict = "[green]PASS[/]" if trial.passed else ("[yellow]pruned[/]" if trial.status == "pruned" else
                                                     "[red]failed[/]" if trial.status == "failed" else "[red]fail[/]")
    metric = f"{trial.metric:.4f}" if trial.metric is not None else "-"
    latency = f"{trial.latency_ms:7.1f} ms" if trial.latency_ms is not None else "       -  "
    cached = " (resumed)" if trial.cached else ""
    out.print(
        f"trial {trial.idx:>2} {trial.origin:<14} {metric:>7} {latency} {verdict:<20} "
        f"{describe_config(trial.config)}{cached}",
        highlight=False,
        soft_wrap=True,
    )


def _render(result: Any) -> None:
    table = Table(title=f"quantkit: {result.report['model']['name_or_path']}", title_justify="left")
    for col in ("", "FP32", "quantized", "change"):
        table.add_column(col, justify="right" if col else "left")
    for row in result.summary_rows():
        table.add_row(*row)
    out.print(table)
    cfg = result.report["quantization"]["config"]
    weights = (f"int{(cfg.get('weight_only') or {}).get('bits', 4)}" if cfg["approach"] == "weight_only"
               else cfg["weight_type"])
    unit = "windows" if (result.report.get("result") or {}).get("scores") else "examples"
    out.print(
        f"{cfg['approach']} {weights} weights via {result.report['quantization']['backend']}"
        f" · evaluated on {result.report['evaluation']['examples']} {unit}"
        f" · {result.report['timings']['total_s']:.0f}s",
        highlight=False,
    )
    tuning = result.tuning
    if tuning:
        counts = tuning["counts"]
        out.print(
            f"tuning: {len(tuning['trials'])} trials ({counts['ok']} evaluated, {counts['pruned']} pruned, "
            f"{counts['failed']} failed); chosen: {tuning['reason']}",
            highlight=False,
        )
        for node in tuning["fallback_nodes"]:
            out.print(f"  kept in FP32: {node['node']} (+{node['metric_gain']:.4f} metric)", highlight=False)
    from .latency import timing_warnings

    probe = result.report.get("probe")
    if probe:
        out.print(f"default {probe['choice']}: {probe['chosen']} ({probe['status']}: {probe['reason']})",
                  highlight=False, soft_wrap=True)
    unreliable = timing_warnings(result.report)
    if unreliable:  # one warning, listing every measurement that could not be trusted
        listed = "\n".join(f"  - {w.removeprefix('timings unreliable: ')}" for w in unreliable)
        err.print(f"warning: timings unreliable ({len(unreliable)}):\n{listed}", markup=False, highlight=False,
                  style="yellow", soft_wrap=True)
    out.print(f"artifacts: {result.output_dir}")
    if getattr(result, "push", None) is not None:
        out.print(f"hub: {result.push.url}" + (" (already up to date)" if result.push.up_to_date else ""), highlight=False)


_ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The YAML spec.", dir_okay=False)]
_ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Hub model id or local folder (overrides model.name_or_path).")
]
_OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Artifact folder (overrides output.dir).")]
_OverwriteOpt = Annotated[bool, typer.Option("--overwrite", metavar="", help="Replace an existing artifact folder.")]
_ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", metavar="", help="One line per stage and timing round on stderr (and bars on a terminal); --no-progress: only warnings and the result.")]


@contextmanager
def _show_progress(on: bool) -> Iterator[None]:
    """Route ``quantkit.progress`` (one line per stage and timing round) to stderr, plain, TTY or not; with
    ``on`` False, silence it. Restored afterwards (the CLI may run in-process, e.g. under a test runner)."""
    log = logging.getLogger("quantkit.progress")
    saved = (log.handlers[:], log.level, log.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("quantkit: %(message)s"))
    log.handlers = [handler] if on else []
    log.setLevel(logging.INFO if on else logging.WARNING)
    log.propagate = False
    try:
        yield
    finally:
        log.handlers, log.propagate = saved[0], saved[2]
        log.setLevel(saved[1])  # (setLevel, not the attribute: it clears the loggers' level cache)
_NoCheckOpt = Annotated[bool, typer.Option("--no-check", metavar="", help="Skip the pre-flight checks (quantkit check).")]
_ResetTrialsOpt = Annotated[bool, typer.Option(
    "--reset-trials", metavar="", help="Move an unreadable trial database aside (timestamped backup), keep the trials that "
    "can still be read, and go on with a new one.")]


def _run(config: Path, model: str | None, output: Path | None, overwrite: bool, progress: bool, tune: bool,
         check: bool = True, reset_trials: bool = False, executor: str | None = None) -> None:
    try:
        from .quantizer import Quantizer
        from .specio import with_overrides

        spec = _load(config, model)
        if executor is not None:  # --executor: where trials (and evaluation shards) run
            spec = with_overrides(spec, **{"tuning.executor.type": executor, "evaluation.executor.type": executor})
        if reset_trials:
            _reset_trials(output if output is not None else spec.output.dir)
        if check:  # before loading the weights: a bad spec fails in seconds, with every problem listed
            _preflight(spec, config, output, overwrite, tune or spec.tuning is not None)
        quantizer = Quantizer.from_spec(spec)
        options = dict(output_dir=output, overwrite=True if overwrite else None, progress=progress and sys.stderr.isatty(),
                       check=False)
        with _show_progress(progress):
            if tune or spec.tuning is not None:
                result = quantizer.tune(spec, on_trial=_print_trial, **options)
            else:
                result = quantizer.quantize(spec, **options)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - mapped to messages and exit codes
        _fail(exc)
    _render(result)


def _reset_trials(output: Any) -> None:
    from .search.store import check_trial_db, reset_trial_store, trial_db_path

    if output is None:
        return
    path = trial_db_path(output)
    if check_trial_db(path) is None:
        err.print(f"--reset-trials: {path} is readable (or absent): kept as it is", highlight=False)
        return
    backup = reset_trial_store(path)
    err.print(f"--reset-trials: {path} moved to {backup}; the readable trials were copied into a new one",
              highlight=False)


@app.command()
def quantize(
    config: _ConfigOpt,
    model: _ModelOpt = None,
    output: _OutputOpt = None,
    overwrite: _OverwriteOpt = False,
    progress: _ProgressOpt = True,
    no_check: _NoCheckOpt = False,
    reset_trials: _ResetTrialsOpt = False,
) -> None:
    """Export MODEL to ONNX, quantize it with the spec, evaluate FP32 vs quantized, and write the artifacts.

    A spec with a `tuning:` section runs the accuracy-tolerance search (as `quantkit tune`).
    The pre-flight checks (`quantkit check`) run first unless --no-check.
    """
    _run(config, model, output, overwrite, progress, tune=False, check=not no_check, reset_trials=reset_trials)


@app.command()
def tune(
    config: _ConfigOpt,
    model: _ModelOpt = None,
    output: _OutputOpt = None,
    overwrite: _OverwriteOpt = False,
    progress: _ProgressOpt = True,
    no_check: _NoCheckOpt = False,
    reset_trials: _ResetTrialsOpt = False,
    executor: Annotated[str | None, typer.Option(
        "--executor", help="Where trials run: local (this process) or ray (the Ray cluster at "
        "tuning.executor.address / RAY_ADDRESS; needs the ray extra). Sets tuning.executor.type and "
        "evaluation.executor.type.")] = None,
) -> None:
    """Search for the fastest quantized model within the accuracy tolerance (the spec's `tuning:` section).

    Finished trials are kept beside the output folder: rerunning the same command resumes (with
    either executor: a run started on Ray can finish locally and vice versa).
    Exit code 3 when no candidate is within tolerance (the closest one is saved anyway).
    The pre-flight checks (`quantkit check`) run first unless --no-check.
    """
    _run(config, model, output, overwrite, progress, tune=True, check=not no_check, reset_trials=reset_trials,
         executor=executor)


# --------------------------------------------------------------------------- check
def _preflight(spec: Any, config: Path, output: Path | None, overwrite: bool, tune: bool) -> None:
    """Run the pre-flight checks before quantize/tune; warnings are printed, errors raise PreflightError."""
    from .checks import run_checks

    report = run_checks(spec, output_dir=output, overwrite=True if overwrite else None, tune=tune,
                        spec_file=config.name)
    for problem in report.warnings:
        err.print(f"warning: {problem}", markup=False, highlight=False, style="yellow", soft_wrap=True)
    report.raise_for_errors()


def _render_problem_blocks(report: Any) -> None:
    """One block per problem: severity and key path, then the message and the fix wrapped at spaces only (a table's
    columns broke paths and operator names mid-token at 80 columns)."""
    import textwrap

    from rich.text import Text

    out.print(Text(f"quantkit check: {report.spec_file or 'spec'}", style="bold"))
    width = max(40, out.width - 8)
    for p in report.problems:
        style = "bold red" if p.severity == "error" else "yellow"
        out.print(Text.assemble((f"{p.severity:<7} ", style), (p.key_path or "-", "bold")), soft_wrap=True)
        for label, body in (("", p.message), ("fix: ", p.hint)):
            if body:
                lines = textwrap.wrap(label + body, width, break_long_words=False, break_on_hyphens=False)
                for line in lines:
                    out.print(Text("        " + line), soft_wrap=True)


def _render_check(report: Any) -> None:
    from rich.text import Text

    if report.problems:
        _render_problem_blocks(report)
    for e in report.estimates:
        out.print(Text(f"{e.name}: {e.summary}"), soft_wrap=True)
    verdict = "[green]ok[/]" if report.ok else "[bold red]not ok[/]"
    out.print(f"{verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s) "
              f"in {report.duration_s:.1f}s", highlight=False)


@app.command()
def check(
    config: _ConfigOpt,
    model: _ModelOpt = None,
    output: _OutputOpt = None,
    overwrite: _OverwriteOpt = False,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the report as JSON.")] = False,
) -> None:
    """Pre-flight: find spec, file, model, data and shape problems in seconds, before any export or calibration.

    Lists every problem with its spec key path and a fix, plus memory, disk and duration estimates.
    Loads no weights and runs no calibration. Exit code 0 when clean (warnings allowed), 2 otherwise.
    """
    import json

    try:
        from .checks import run_checks

        report = run_checks(config, model, output_dir=output, overwrite=True if overwrite else None)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - mapped to messages and exit codes
        _fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    else:
        _render_check(report)
    _state["fast_exit"] = True
    raise typer.Exit(report.exit_code)


# --------------------------------------------------------------------------- push (issue #6)
@app.command()
def push(
    folder: Annotated[Path, typer.Argument(help="Artifact folder written by quantize/tune.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub model repo, owner/name (created if missing).")],
    private: Annotated[bool, typer.Option("--private", metavar="", help="Create the repo private (an existing repo keeps its visibility).")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch to push to (created from main if missing).")] = None,
    commit_message: Annotated[str | None, typer.Option("--commit-message", help="Commit message.")] = None,
    create_pr: Annotated[bool, typer.Option("--create-pr", metavar="", help="Open a pull request instead of committing.")] = False,
    base_model: Annotated[str | None, typer.Option("--base-model", help="Hub id of the FP32 model, for the card (default: from the report when it is a Hub id).")] = None,
    include_fp32: Annotated[bool, typer.Option("--include-fp32", metavar="", help="Also push the FP32 baseline fp32/ (serving never reads it).")] = False,
) -> None:
    """Push an artifact folder to the Hugging Face Hub with a model card generated from its report.

    The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT selects the Hub.
    Only changed files are committed; the folder is not modified. Exit code 2: bad input or credentials.
    """
    try:
        from .hub import push_artifact

        result = push_artifact(folder, repo_id, private=private, revision=revision, commit_message=commit_message,
                               create_pr=create_pr, base_model=base_model, include_fp32=include_fp32)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - mapped to messages and exit codes
        _fail(exc)
    if result.up_to_date:
        out.print(f"{result.repo_id}@{result.revision} is already up to date: {result.repo_url}", highlight=False)
    elif result.pr_url:
        out.print(f"opened a pull request on {result.repo_id} with {len(result.uploaded)} file(s): {result.pr_url}",
                  highlight=False)
    else:
        out.print(f"pushed {len(result.uploaded)} file(s) to {result.repo_id}@{result.revision}: {result.commit_url}",
                  highlight=False)


# --------------------------------------------------------------------------- benchmark (issue #5, part 4)
def _int_list(value: str, option: str) -> list[int]:
    """``"1,8"`` -> ``[1, 8]``; anything else is a usage error (exit code 2)."""
    items = [v.strip() for v in value.split(",")]
    if not all(v.isdigit() and int(v) > 0 for v in items):
        raise typer.BadParameter(
            f"{value!r}: expected positive integers separated by commas, e.g. 1,8", param_hint=f"'{option}'"
        )
    return [int(v) for v in items]


def _render_benchmark(result: Any) -> None:
    from rich import box

    def fmt(value: float) -> str:
        return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"

    table = Table(title="quantkit benchmark: latency in ms, shape = batch×sequence", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    width = max(len(r.model) for r in result.rows)
    table.add_column("model", overflow="fold", min_width=min(width, 24))
    for col in ("shape", "p50", "p90", "p99", "ex/s", "RSS MB", "load s", "vs FP32"):
        table.add_column(col, justify="right", no_wrap=True)
    shape = None
    for row in result.rows:
        if shape is not None and shape != (row.batch_size, row.sequence_length):
            table.add_section()
        shape = (row.batch_size, row.sequence_length)
        if row.vs_fp32 is None:
            vs = "-"
        elif row.baseline is None:
            vs = "baseline"
        else:
            vs = f"{row.vs_fp32:.2f}x" + ("?" if row.timing_warning else "")
        table.add_row(row.model, f"{row.batch_size}×{row.sequence_length}", fmt(row.p50_ms), fmt(row.p90_ms),
                      fmt(row.p99_ms), fmt(row.throughput), f"{row.peak_rss_mb:.0f}", f"{row.load_s:.2f}", vs)
    out.print(table)
    s = result.settings
    cpu = result.environment.get("cpu", {}).get("model")
    out.print(
        f"{s['threads']} thread(s) · {s['warmup']} warmup + {s['repeats']} timed runs per round, median round of "
        f"{s['rounds']} interleaved round(s) · ex/s at p50 · RSS MB = peak resident memory of the process",
        highlight=False,
    )
    notes = ["vs FP32 = this model's p50 / the fp32/model.onnx p50 timed in the same round, median over rounds "
             "(below 1 is faster; its 90% interval in --json); the p50 columns are medians over rounds, so their "
             "quotient matches it only when the rounds agree; ? = not established, see the warnings"] if any(
        r.baseline for r in result.rows) else []
    out.print(" · ".join(notes + ([f"CPU: {cpu}"] if cpu else [])), highlight=False)
    for row in result.rows:
        if row.timing_warning:
            err.print(f"warning: {row.batch_size}×{row.sequence_length}: {row.timing_warning}", markup=False,
                      highlight=False, style="yellow", soft_wrap=True)
    written = [str(p) for p in (result.json_path, result.plot_path) if p is not None]
    if written:
        out.print(f"wrote {' and '.join(written)}", highlight=False, soft_wrap=True)


@app.command()
def benchmark(
    models: Annotated[list[str], typer.Argument(
        help="Artifact folders (their fp32/model.onnx is timed too), ONNX export folders, .onnx files or "
        "Hub repo ids.",
        metavar="DIR", show_default=False)],
    batch: Annotated[str, typer.Option("--batch", "-b", help="Batch sizes, comma-separated.")] = "1,8",
    seq: Annotated[str, typer.Option("--seq", "-s", help="Sequence lengths, comma-separated.")] = "32,128,256",
    threads: Annotated[int | None, typer.Option(
        "--threads", "-t", min=1, help="ONNX Runtime intra-op threads (default: physical cores).")] = None,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs before timing.")] = 5,
    repeats: Annotated[int, typer.Option("--repeats", min=3, help="Timed runs per round.")] = 30,
    rounds: Annotated[int, typer.Option("--rounds", min=1, max=10,
                                        help="Fresh-process rounds, models interleaved; ratios are medians of "
                                        "per-round ratios.")] = 3,
    fp32: Annotated[bool, typer.Option("--fp32/--no-fp32", metavar="", help="Also time each folder's fp32/model.onnx.")] = True,
    output: Annotated[Path | None, typer.Option("--output", "-o", file_okay=False,
                                                help="Folder for benchmark.json and benchmark.png "
                                                "(default: print only, write nothing).")] = None,
    log_y: Annotated[bool, typer.Option("--log-y", metavar="", help="Logarithmic latency axis in benchmark.png.")] = False,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the JSON result instead of the table.")] = False,
) -> None:
    """Latency (p50/p90/p99), throughput, peak RSS and load time of each model at each batch × sequence length.

    Each measurement runs in a fresh process; models are interleaved round by round. Prints a table; with
    --output, also writes benchmark.json and benchmark.png (p50 latency vs sequence length per model and batch).

    Exit code 2: a missing folder, a bad list, or a sequence length above a model's max_position_embeddings.
    """
    batch_sizes = _int_list(batch, "--batch")
    sequence_lengths = _int_list(seq, "--seq")
    try:
        from .benchmark import benchmark as run_benchmark

        with err.status("benchmarking (a fresh process per model, shape and round) ..."):
            result = run_benchmark(models, batch_sizes=batch_sizes, sequence_lengths=sequence_lengths,
                                   threads=threads, warmup=warmup, repeats=repeats, rounds=rounds,
                                   include_fp32=fp32, output_dir=output, log_y=log_y)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - mapped to messages and exit codes
        _fail(exc)
    if as_json:
        import json

        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        _render_benchmark(result)


@app.command()
def generate(
    model: Annotated[str, typer.Argument(help="A text-generation artifact folder or Hub repo id.", metavar="DIR",
                                         show_default=False)],
    prompt: Annotated[str, typer.Argument(help="The prompt.", show_default=False)],
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", min=0, help="New tokens at most.")] = 64,
    sample: Annotated[bool, typer.Option("--sample/--greedy", metavar="",
                                         help="Draw tokens (temperature, top-k, top-p) instead of the argmax.")] = False,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature.")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", min=0, help="Sample among this many tokens (0: all).")] = 50,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the sampler.")] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop at this text (repeatable).")] = None,
    precision: Annotated[str, typer.Option("--precision", help="int8: the quantized model; fp32: the artifact's "
                                           "FP32 baseline (output.keep_fp32).")] = "int8",
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=1, help="ONNX Runtime intra-op threads.")] = None,
) -> None:
    """Generate from a prompt with a text-generation artifact, streaming tokens to stdout; then prefill and decode
    speed on stderr."""
    try:
        from .generation import GenerationConfig
        from .runtime import load

        lm = load(model, precision=precision, threads=threads)
        config = GenerationConfig(max_new_tokens, sample, temperature, top_k, top_p, seed, tuple(stop or ()))
        done = None
        for piece, done in lm.generator().stream(prompt, config):
            sys.stdout.write(piece)
            sys.stdout.flush()
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - mapped to messages and exit codes
        _fail(exc)
    sys.stdout.write("\n")
    if done is not None:
        err.print(f"{done.prompt_tokens} prompt tokens, prefill {done.prefill_s * 1e3:.0f} ms; {len(done.token_ids)} "
                  f"new tokens, {done.decode_tokens_per_s:.1f} tokens/s decoding ({lm.threads} threads); stopped by "
                  f"{done.stopped_by}", highlight=False)


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON schema of the spec file."""
    from .schema import spec_json_schema_text

    text = spec_json_schema_text()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


@app.command()
def backends() -> None:
    """List the quantization backends."""
    from .backends import BACKENDS

    for name in BACKENDS.names():
        out.print(name)


@app.command()
def env(
    hardware: Annotated[str, typer.Option("--hardware", help="A target to show defaults for (default: auto = this CPU).")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show this CPU's int8 features, the hardware target quantkit picks and its quantization defaults."""
    import json as _json

    from .artifacts import package_versions
    from .errors import SpecError, SpecIssue
    from .hardware import TARGETS, hardware_profile

    try:
        if hardware != "auto" and hardware not in TARGETS:
            raise SpecError([SpecIssue(None, "hardware", f"{hardware!r} is not auto or one of {', '.join(TARGETS)}")])
        profile = hardware_profile(hardware)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    data = profile.to_dict()
    data["int8_outlook"] = {a: profile.int8_outlook(a) for a in ("dynamic", "static")}
    data["packages"] = package_versions()
    if as_json:
        out.print_json(_json.dumps(data))
        return
    cpu = profile.cpu
    table = Table(title="CPU", show_header=False)
    table.add_row("model", cpu.model)
    table.add_row("arch", cpu.arch)
    table.add_row("cores", f"{cpu.physical_cores or '?'} physical, {cpu.logical_cores} logical")
    table.add_row("caches", ", ".join(f"{k} {v // 1024} KiB" for k, v in cpu.caches.items()) or "unknown")
    table.add_row("int8/bf16 features", " ".join(cpu.features) or "none")
    table.add_row("VNNI", "yes" if cpu.has_vnni else "no")
    table.add_row("detected target", data["detected_target"])
    out.print(table)
    defaults = Table(title=f"quantization defaults for target {profile.target} ({profile.source})")
    defaults.add_column("field")
    defaults.add_column("value")
    defaults.add_column("why")
    for key, value in profile.defaults.items():
        defaults.add_row(key, str(value), profile.reasons.get(key, ""))
    out.print(defaults)
    for approach, note in data["int8_outlook"].items():
        if note:
            out.print(f"[yellow]{approach}:[/] {note}", highlight=False)
    out.print("packages: " + ", ".join(f"{k} {v}" for k, v in data["packages"].items()), highlight=False)


#: Words a user may write after an on/off flag (``--private true``): shells and other CLIs teach both habits.
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def flag_values(argv: list[str]) -> list[str]:
    """``argv`` with on/off flags given a value rewritten to the flag form: ``--private true`` -> ``--private``,
    ``--private false`` -> nothing, ``--progress=no`` -> ``--no-progress``. Anything else is left to click."""
    commands = getattr(typer.main.get_command(app), "commands", {})
    at = next((i for i, token in enumerate(argv) if token in commands), None)
    if at is None:
        return list(argv)
    flags: dict[str, tuple[Any, bool]] = {}
    for param in commands[argv[at]].params:  # click options, duck-typed (typer vendors its own click)
        if getattr(param, "is_flag", False) and not getattr(param, "count", False):
            flags.update({o: (param, True) for o in param.opts})
            flags.update({o: (param, False) for o in param.secondary_opts})
    out, i = list(argv[:at + 1]), at + 1
    while i < len(argv):
        token, value, step = argv[i], None, 1
        if "=" in token and token.split("=", 1)[0] in flags:
            token, value = token.split("=", 1)
        elif token in flags and i + 1 < len(argv) and argv[i + 1].lower() in _BOOL_WORDS:
            value, step = argv[i + 1], 2
        if token in flags and value is not None and value.lower() in _BOOL_WORDS:
            param, positive = flags[token]
            on = _BOOL_WORDS[value.lower()] == positive
            if on:
                out.append(param.opts[0])
            elif param.secondary_opts:
                out.append(param.secondary_opts[0])
            i += step
            continue
        if token == "--":  # what follows is positional
            out.extend(argv[i:])
            break
        out.append(argv[i])
        i += 1
    return out


def main() -> None:
    try:
        app(args=flag_values(sys.argv[1:]))
    except SystemExit as exc:
        if _state.get("fast_exit"):
            # `check` is read-only: skip tearing down torch/transformers/optimum module graphs (seconds of the
            # check's wall time); exit handlers still run and the streams are flushed.
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
