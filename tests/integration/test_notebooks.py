"""Every notebook in notebooks/ runs top to bottom; a cell that errors fails the test.

Notebooks are committed without outputs (tests/unit/test_docs.py checks the committed JSON). The
kernel inherits this process's environment: PYTHONPATH (so it imports this checkout's quantkit),
and conftest's isolated HF_HOME with HF_HUB_OFFLINE=1, so no notebook reaches the real Hub in CI
(04_hub starts the local Hub-API server in tests/hubserver.py when it is offline).

01 runs in the default `pytest` run; the others take minutes each and are `slow` (`.ci/run` runs
`pytest -m slow` as well). A new notebook is slow unless it is listed here otherwise.
"""

from __future__ import annotations

import time

import pytest
from conftest import REPO

pytestmark = pytest.mark.integration

#: name → (marks, images the executed notebook must show inline)
NOTEBOOKS_BY_NAME: dict[str, tuple[tuple[pytest.MarkDecorator, ...], int]] = {
    "01_quickstart.ipynb": ((), 1),           # FP32 vs dynamic vs static bars
    "02_tuning.ipynb": ((pytest.mark.slow,), 1),  # tuning.png
    "03_qat.ipynb": ((pytest.mark.slow,), 1),     # training curve + comparison
    "04_hub.ipynb": ((pytest.mark.slow,), 0),
    "05_tasks.ipynb": ((pytest.mark.slow,), 1),   # int8 vs FP32 pair cosine scatter + histogram
    "06_llm.ipynb": ((pytest.mark.slow,), 1),     # FP32 vs int4 perplexity, size, decode tokens/s
}
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
#: Seconds one notebook may take before the test fails (budget: a few minutes each on 2 cores).
CELL_TIMEOUT = 600


def _params():
    for path in NOTEBOOKS:
        marks, _ = NOTEBOOKS_BY_NAME.get(path.name, ((pytest.mark.slow,), 0))
        yield pytest.param(path, marks=marks, id=path.name)


def test_notebooks_exist():
    assert NOTEBOOKS, "notebooks/ has no notebook"
    assert {"01_quickstart.ipynb", "02_tuning.ipynb", "03_qat.ipynb", "04_hub.ipynb", "05_tasks.ipynb"} <= {
        p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", _params())
def test_notebook_runs(path, capsys):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    started = time.perf_counter()
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as exc:  # the failing cell's source and traceback
        pytest.fail(f"{path.name}: a cell failed\n{exc}", pytrace=False)
    with capsys.disabled():
        print(f"\n{path.name}: executed in {time.perf_counter() - started:.0f}s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    _, expected = NOTEBOOKS_BY_NAME.get(path.name, ((), 0))
    assert len(images) >= expected, f"{path.name} should show {expected} plot(s) inline, showed {len(images)}"
