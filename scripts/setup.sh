#!/usr/bin/env bash
# Create .venv and install quantkit with its pinned stack. Idempotent; safe to rerun.
# torch 2.13.0 (CPU build) goes in first and is pinned, so nothing can pull a CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
PIP=("$VPY" -m pip --disable-pip-version-check)
FIND_LINKS=()
[ -d /opt/wheels ] && FIND_LINKS=(--find-links /opt/wheels)

if ! "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__ == '2.13.0+cpu' else 1)" 2>/dev/null; then
  "${PIP[@]}" install -q "${FIND_LINKS[@]}" "torch==2.13.0"
fi
"${PIP[@]}" install -q "${FIND_LINKS[@]}" -c constraints.txt -e ".[dev]"
# The ray extra (issue #17: trials and evaluation shards on a Ray cluster; CPU-only Ray, checked below).
"${PIP[@]}" install -q "${FIND_LINKS[@]}" -c constraints.txt -e ".[ray]"

# Guard: CPU torch 2.13.0 exactly, and no CUDA wheels anywhere in the environment.
"$VPY" - <<'PY'
import sys
from importlib import metadata

import torch

problems = []
if torch.__version__ != "2.13.0+cpu":
    problems.append(f"torch is {torch.__version__}, expected 2.13.0+cpu")
cuda = sorted(d.metadata["Name"] for d in metadata.distributions() if d.metadata["Name"].lower().startswith("nvidia"))
if cuda:
    problems.append("CUDA packages installed: " + ", ".join(cuda))
try:  # the ray extra: CI runs the Ray executor tests (tests/unit/test_ray.py)
    import ray  # noqa: F401
except ImportError as exc:
    problems.append(f"the ray extra is not importable ({exc})")
if problems:
    sys.exit("setup check failed: " + "; ".join(problems))
print(f"environment ok: torch {torch.__version__}, no nvidia-* packages")
PY
