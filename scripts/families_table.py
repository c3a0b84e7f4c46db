"""Render the encoder-family support table in README.md from quantkit/families.py.

    .venv/bin/python scripts/families_table.py            # rewrite README.md between the markers
    .venv/bin/python scripts/families_table.py --check    # exit 1 when README.md is out of date
    .venv/bin/python scripts/families_table.py --stdout   # print the table

The table comes from ``quantkit.families.support_table()``: the same data the support-matrix tests
(tests/unit/test_families.py) assert cell by cell, so a cell marked ✓ here is a cell the default test run
passes, and tests/unit/test_docs.py fails when README.md is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
START = "<!-- support-table:start -->"
END = "<!-- support-table:end -->"
REGENERATE = ".venv/bin/python scripts/families_table.py"


def current_table() -> str:
    from quantkit.families import support_table

    return (f"<!-- generated from quantkit/families.py by scripts/families_table.py; regenerate with: {REGENERATE} -->"
            "\n\n" + support_table())


def splice(readme: str, table: str) -> str:
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md needs the markers {START} and {END} (in that order)")
    return readme[: start + len(START)] + "\n" + table + readme[end:]


def readme_section(readme: str) -> str:
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md needs the markers {START} and {END} (in that order)")
    return readme[start + len(START): end].lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md is out of date")
    mode.add_argument("--stdout", action="store_true", help="print the table instead of writing README.md")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    table = current_table()
    if args.stdout:
        sys.stdout.write(table)
        return 0
    text = args.readme.read_text(encoding="utf-8")
    updated = splice(text, table)
    if args.check:
        if updated != text:
            print(f"{args.readme} support table is out of date; regenerate with: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    if updated != text:
        args.readme.write_text(updated, encoding="utf-8")
        print(f"updated the support table in {args.readme}")
    else:
        print(f"{args.readme} is up to date")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
