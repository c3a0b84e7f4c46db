#!/usr/bin/env bash
# Create a virtual environment and install quantkit with one of its two pinned stacks. Idempotent; safe to rerun.
#
#   bash scripts/setup.sh                    # default stack: transformers 5, constraints.txt -> .venv
#   bash scripts/setup.sh --stack optimum    # quantkit[optimum]: optimum-onnx 0.1.0 + transformers 4.57.6,
#                                            #   constraints-optimum.txt -> .venv-optimum
#   VENV=path bash scripts/setup.sh [...]    # another folder for the environment
#
# torch 2.13.0 (CPU build) goes in first and is pinned, so nothing can pull a CUDA torch; the script fails
# if torch is not 2.13.0+cpu, if any nvidia-* package got in, or if `pip check` finds a broken requirement.
set -euo pipefail
cd "$(dirname "$0")/.."

STACK=default
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) STACK=${2:?--stack needs default or optimum}; shift 2 ;;
    --stack=*) STACK=${1#--stack=}; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (expected --stack default|optimum)" >&2; exit 2 ;;
  esac
done
case "$STACK" in
  default) VENV=${VENV:-.venv}; CONSTRAINTS=constraints.txt; EXTRAS="dev,ray,docs" ;;
  optimum) VENV=${VENV:-.venv-optimum}; CONSTRAINTS=constraints-optimum.txt; EXTRAS="dev,optimum" ;;
  *) echo "unknown stack: $STACK (expected default or optimum)" >&2; exit 2 ;;
esac

PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python
PIP=("$VPY" -m pip --disable-pip-version-check)
FIND_LINKS=()
[ -d /opt/wheels ] && FIND_LINKS=(--find-links /opt/wheels)

if ! "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__ == '2.13.0+cpu' else 1)" 2>/dev/null; then
  "${PIP[@]}" install -q "${FIND_LINKS[@]}" "torch==2.13.0"
fi
"${PIP[@]}" install -q "${FIND_LINKS[@]}" -c "$CONSTRAINTS" -e ".[$EXTRAS]"

# Guard: CPU torch 2.13.0 exactly, no CUDA wheels anywhere in the environment, requirements consistent.
"$VPY" - "$STACK" <<'PY'
import sys
from importlib import metadata

import torch

stack = sys.argv[1]
problems = []
if torch.__version__ != "2.13.0+cpu":
    problems.append(f"torch is {torch.__version__}, expected 2.13.0+cpu")
cuda = sorted(d.metadata["Name"] for d in metadata.distributions() if d.metadata["Name"].lower().startswith("nvidia"))
if cuda:
    problems.append("CUDA packages installed: " + ", ".join(cuda))
transformers = metadata.version("transformers")
if (stack == "default") != (int(transformers.split(".")[0]) >= 5):
    problems.append(f"the {stack} stack got transformers {transformers}")
if stack == "default":
    try:  # the ray extra: CI runs the Ray executor tests (tests/unit/executors/test_ray_cluster.py) on the default stack
        import ray  # noqa: F401
    except ImportError as exc:
        problems.append(f"the ray extra is not importable ({exc})")
if problems:
    sys.exit("setup check failed: " + "; ".join(problems))
print(f"environment ok ({stack} stack): torch {torch.__version__}, transformers {transformers}, no nvidia-* packages")
PY
"${PIP[@]}" check
