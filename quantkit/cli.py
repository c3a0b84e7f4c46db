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
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
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
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="Show progress logs.")] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Debug logs and full tracebacks.")] = False,
) -> None:
    _state["debug"] = debug
    _state["fast_exit"] = False
    _configure_logging(verbose, debug)


def _load(config: Path, model: str | None) -> Any:
    from .spec import load_spec

    spec = load_spec(config)
    if model is not None:
        local = Path(model).expanduser()
        spec = spec.with_overrides(**{"model.name_or_path": str(local.resolve()) if local.exists() else model})
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
    out.print(
        f"{cfg['approach']} {cfg['weight_type']} weights via {result.report['quantization']['backend']}"
        f" · evaluated on {result.report['evaluation']['examples']} examples"
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
    out.print(f"artifacts: {result.output_dir}")


_ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The YAML spec.", dir_okay=False)]
_ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Hub model id or local folder (overrides model.name_or_path).")
]
_OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Artifact folder (overrides output.dir).")]
_OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing artifact folder.")]
_ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")]
_NoCheckOpt = Annotated[bool, typer.Option("--no-check", help="Skip the pre-flight checks (quantkit check).")]


def _run(config: Path, model: str | None, output: Path | None, overwrite: bool, progress: bool, tune: bool,
         check: bool = True) -> None:
    try:
        from .quantizer import Quantizer

        spec = _load(config, model)
        if check:  # before loading the weights: a bad spec fails in seconds, with every problem listed
            _preflight(spec, config, output, overwrite, tune or spec.tuning is not None)
        quantizer = Quantizer.from_spec(spec)
        options = dict(output_dir=output, overwrite=True if overwrite else None, progress=progress and sys.stderr.isatty(),
                       check=False)
        if tune or spec.tuning is not None:
            result = quantizer.tune(spec, on_trial=_print_trial, **options)
        else:
            result = quantizer.quantize(spec, **options)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - mapped to messages and exit codes
        _fail(exc)
    _render(result)


@app.command()
def quantize(
    config: _ConfigOpt,
    model: _ModelOpt = None,
    output: _OutputOpt = None,
    overwrite: _OverwriteOpt = False,
    progress: _ProgressOpt = True,
    no_check: _NoCheckOpt = False,
) -> None:
    """Export MODEL to ONNX, quantize it with the spec, evaluate FP32 vs quantized, and write the artifacts.

    A spec with a `tuning:` section runs the accuracy-tolerance search (as `quantkit tune`).
    The pre-flight checks (`quantkit check`) run first unless --no-check.
    """
    _run(config, model, output, overwrite, progress, tune=False, check=not no_check)


@app.command()
def tune(
    config: _ConfigOpt,
    model: _ModelOpt = None,
    output: _OutputOpt = None,
    overwrite: _OverwriteOpt = False,
    progress: _ProgressOpt = True,
    no_check: _NoCheckOpt = False,
) -> None:
    """Search for the fastest quantized model within the accuracy tolerance (the spec's `tuning:` section).

    Finished trials are kept beside the output folder: rerunning the same command resumes.
    Exit code 3 when no candidate is within tolerance (the closest one is saved anyway).
    The pre-flight checks (`quantkit check`) run first unless --no-check.
    """
    _run(config, model, output, overwrite, progress, tune=True, check=not no_check)


# --------------------------------------------------------------------------- check
def _preflight(spec: Any, config: Path, output: Path | None, overwrite: bool, tune: bool) -> None:
    """Run the pre-flight checks before quantize/tune; warnings are printed, errors raise PreflightError."""
    from .checks import run_checks

    report = run_checks(spec, output_dir=output, overwrite=True if overwrite else None, tune=tune,
                        spec_file=config.name)
    for problem in report.warnings:
        err.print(f"warning: {problem}", markup=False, highlight=False, style="yellow", soft_wrap=True)
    report.raise_for_errors()


def _render_check(report: Any) -> None:
    from rich.text import Text

    if report.problems:
        table = Table(title=f"quantkit check: {report.spec_file or 'spec'}", title_justify="left", show_lines=True)
        table.add_column("")
        table.add_column("key path", no_wrap=True)
        table.add_column("problem", overflow="fold", ratio=3)
        table.add_column("fix", overflow="fold", ratio=2)
        for p in report.problems:
            style = "bold red" if p.severity == "error" else "yellow"
            table.add_row(Text(p.severity, style=style), Text(p.key_path or "-"), Text(p.message), Text(p.hint or ""))
        out.print(table)
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
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
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


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON schema of the spec file."""
    from .spec import spec_json_schema_text

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


def main() -> None:
    try:
        app()
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
