"""A tiny fault-injection hook for the crash tests: ``QUANTKIT_FAULT_AT=<point>`` makes the process
SIGKILL itself when it reaches that named point (nothing happens when the variable is unset).

Points: ``preflight`` (checks done), ``export`` (FP32 ONNX written), ``calibration`` (static
ranges being collected), ``quantize`` (quantized model written), ``evaluation`` (FP32/int8 evaluated),
``artifacts`` (half the artifact folder written), ``rename`` (artifact folder complete, not yet
renamed into place). ``QUANTKIT_FAULT_AT`` may list several, comma-separated.
"""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["FAULT_ENV", "FAULT_POINTS", "fault_point"]

FAULT_ENV = "QUANTKIT_FAULT_AT"
FAULT_POINTS = ("preflight", "export", "calibration", "quantize", "evaluation", "artifacts", "rename")

logger = logging.getLogger(__name__)


def fault_point(name: str) -> None:
    """SIGKILL this process if ``name`` is listed in ``QUANTKIT_FAULT_AT`` (a test hook; a no-op otherwise)."""
    wanted = os.environ.get(FAULT_ENV)
    if wanted and name in wanted.split(","):
        logger.warning("%s=%s: killing this process at %r", FAULT_ENV, wanted, name)
        os.kill(os.getpid(), signal.SIGKILL)
