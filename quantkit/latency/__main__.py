"""The child side of a fresh-process measurement: ``python -m quantkit.latency PATH BATCH SEQ THREADS WARMUP
REPEATS VOCAB [DECODE]`` prints one :class:`~quantkit.latency.measurement.RuntimeStats` as a JSON line."""

import json
import sys

from .measurement import probe

_path, *_ints = sys.argv[1:]
print(json.dumps(probe(_path, *(int(v) for v in _ints))))
