"""Logging helpers for library code (which never installs handlers)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet"]


@contextmanager
def quiet(name: str = "neural_compressor", level: int = logging.WARNING) -> Iterator[None]:
    """Temporarily raise a chatty third-party logger's level (INC logs every config and trial at INFO
    through its own handler), unless quantkit itself is being debugged."""
    target = logging.getLogger(name)
    previous = target.level
    if logging.getLogger("quantkit").getEffectiveLevel() > logging.DEBUG:
        target.setLevel(max(level, previous))
    try:
        yield
    finally:
        target.setLevel(previous)
