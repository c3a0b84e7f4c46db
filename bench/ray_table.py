"""The reference tune recipe on the local executor vs a 2-node Ray cluster on this machine (issue #17).

    .venv/bin/python bench/ray_table.py [--recipe recipes/minilm-spam-tune.yaml]
        [--model ../shared/models/minilm-spam] [--parallel 2] [--port 6390] [--keep]

First the recipe runs with ``tuning.executor.type: local`` (nothing else running). Then two ``ray start
--block`` processes with 1 CPU each form a cluster on 127.0.0.1 (the head and one joining node; Ray
advertises this machine's own address and guards it with its token authentication, on by default), and
the same recipe runs with ``tuning.executor: {type: ray, address: 127.0.0.1:PORT, parallel_trials: 2,
cpus_per_trial: 1}``: trials are quantized and scored on the two nodes, two at a time, and timed by this
process after each batch. Both runs start from empty trial stores. Printed: the CPU, then per executor the
wall time of the whole tune, the trial counts and the chosen config with its metric and p50 latency.
The two ``ray start`` processes are stopped by their process ids at the end (never ``ray stop``, which
would stop every Ray process of this user).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from quantkit import Quantizer, load_spec, with_overrides  # noqa: E402
from quantkit.errors import ToleranceNotMetError  # noqa: E402
from quantkit.hardware import cpu_info, detect_target  # noqa: E402
from quantkit.search.report import describe_config  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(args: list[str], log: Path, env: dict[str, str], timeout: float = 120.0) -> subprocess.Popen:
    """``ray start ... --block`` in the background; returns once it says the runtime started."""
    proc = subprocess.Popen([RAY, "start", *args, "--block"], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"`ray start {' '.join(args)}` exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"`ray start {' '.join(args)}` did not start within {timeout:.0f}s:\n{log.read_text()[-2000:]}")


def stop_nodes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each ``ray start --block`` we started (it drains and stops the processes it started)."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(spec, model: Path, out: Path) -> dict:
    start = time.perf_counter()
    try:
        result = Quantizer.from_pretrained(model).tune(spec, output_dir=out, progress=False)
    except ToleranceNotMetError as exc:
        return {"wall_s": time.perf_counter() - start, "error": str(exc)}
    wall = time.perf_counter() - start
    tuning = result.report["tuning"]
    chosen = tuning["trials"][tuning["chosen_trial"]]
    return {"wall_s": wall, "counts": tuning["counts"], "trials": len(tuning["trials"]),
            "chosen": describe_config(tuning["chosen_config"], spec.quantization.model_dump(mode="json")),
            "chosen_hash": chosen["config_hash"], "metric": chosen["metric"], "latency_ms": chosen["latency_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "minilm-spam-tune.yaml")
    parser.add_argument("--model", type=Path, default=REPO.parent / "shared" / "models" / "minilm-spam")
    parser.add_argument("--parallel", type=int, default=2, help="tuning.executor.parallel_trials on Ray")
    parser.add_argument("--port", type=int, default=None, help="the head's GCS port (default: a free one)")
    parser.add_argument("--keep", action="store_true", help="keep the outputs, trial stores and Ray logs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # before Ray is imported (it reads them then): the cluster below uses Ray's token authentication
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token")
    try:
        import ray
    except ImportError:
        sys.exit("bench/ray_table.py needs Ray: pip install -e '.[ray]'")

    console = Console(width=150)
    cpu = cpu_info()
    console.print(f"CPU: {cpu.model} ({detect_target(cpu)}, {cpu.physical_cores} physical / {cpu.logical_cores} "
                  f"logical cores); recipe {args.recipe.name}, model {args.model}")
    base = with_overrides(load_spec(args.recipe), **{"model.name_or_path": str(args.model.resolve())})
    results: dict[str, dict] = {}
    work = Path(tempfile.mkdtemp(prefix="quantkit-ray-bench-"))

    local = with_overrides(base, **{"tuning.executor": {"type": "local"}})
    console.print("local executor: tuning ...")
    results["local"] = run(local, args.model, work / "local")

    port = args.port or free_port()
    env = dict(os.environ)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(start_node(["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
                                 "--include-dashboard=false", "--disable-usage-stats"], work / "head.log", env))
        procs.append(start_node([f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=1"],
                                work / "worker.log", env))
        ray.init(address=f"127.0.0.1:{port}", configure_logging=False, log_to_driver=False)
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        console.print(f"ray cluster: {len(nodes)} node(s), {ray.cluster_resources().get('CPU', 0):g} CPUs at "
                      f"127.0.0.1:{port}; tuning with {args.parallel} trial(s) at once ...")
        on_ray = with_overrides(base, **{"tuning.executor": {"type": "ray", "address": f"127.0.0.1:{port}",
                                                            "parallel_trials": args.parallel, "cpus_per_trial": 1}})
        results[f"ray ({len(nodes)} nodes x 1 CPU)"] = run(on_ray, args.model, work / "ray")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_nodes(procs)

    table = Table(title=f"{args.recipe.name}: local vs Ray", title_justify="left")
    for col in ("executor", "wall s", "trials (ok/pruned/failed)", "chosen config", "metric", "p50 ms"):
        table.add_column(col, justify="left" if col in ("executor", "chosen config") else "right")
    for name, r in results.items():
        if "error" in r:
            table.add_row(name, f"{r['wall_s']:.0f}", "-", r["error"][:80], "-", "-")
            continue
        c = r["counts"]
        table.add_row(name, f"{r['wall_s']:.0f}", f"{r['trials']} ({c['ok']}/{c['pruned']}/{c['failed']})",
                      r["chosen"] or "(the recipe's config)", f"{r['metric']:.4f}", f"{r['latency_ms']:.1f}")
    console.print(table)
    hashes = {r.get("chosen_hash") for r in results.values()}
    console.print(f"same chosen config on both: {'yes' if len(hashes) == 1 else 'no (latency decided within noise?)'}")
    if args.keep:
        console.print(f"outputs, trial stores and logs: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
