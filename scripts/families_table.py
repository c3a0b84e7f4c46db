"""Render the encoder-family support table in docs/families.md from quantkit/families.py.

    .venv/bin/python scripts/families_table.py            # rewrite docs/families.md between the markers
    .venv/bin/python scripts/families_table.py --check    # exit 1 when docs/families.md is out of date
    .venv/bin/python scripts/families_table.py --stdout   # print the table

The table comes from ``quantkit.families.support_table()``: the same data the support-matrix tests
(tests/unit/test_families.py) assert cell by cell, so a cell marked ✓ here is a cell the default test run
passes, and tests/unit/test_docs.py fails when docs/families.md is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import doc_sections  # noqa: E402  (scripts/doc_sections.py)

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "families.md"
START = "<!-- support-table:start -->"
END = "<!-- support-table:end -->"
REGENERATE = ".venv/bin/python scripts/families_table.py"


def current_table() -> str:
    from quantkit.families import support_table

    return (f"<!-- generated from quantkit/families.py by scripts/families_table.py; regenerate with: {REGENERATE} -->"
            "\n\n" + support_table())


def splice(page: str, text: str) -> str:
    """``page`` with the text between the markers replaced by ``text``."""
    return doc_sections.splice(page, START, END, text)


def page_section(page: str) -> str:
    return doc_sections.section(page, START, END)


def main(argv: list[str] | None = None) -> int:
    return doc_sections.main(argv, doc=__doc__, generate=current_table, start_marker=START, end_marker=END,
                             what="support table", regenerate=REGENERATE, page=PAGE)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
