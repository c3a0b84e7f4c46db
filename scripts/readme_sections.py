"""Generated sections of README.md: text between two HTML-comment markers, rewritten or checked by a script
(``spec_reference.py``: the spec reference; ``families_table.py``: the encoder support table)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def splice(readme: str, start_marker: str, end_marker: str, text: str) -> str:
    """``readme`` with the text between the markers replaced by ``text``."""
    start, end = readme.find(start_marker), readme.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"README.md needs the markers {start_marker} and {end_marker} (in that order)")
    return readme[: start + len(start_marker)] + "\n" + text + readme[end:]


def section(readme: str, start_marker: str, end_marker: str) -> str:
    """The text between the markers."""
    start, end = readme.find(start_marker), readme.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"README.md needs the markers {start_marker} and {end_marker} (in that order)")
    return readme[start + len(start_marker): end].lstrip("\n")


def main(argv: list[str] | None, *, doc: str, generate: Callable[[], str], start_marker: str, end_marker: str,
         what: str, regenerate: str, readme: Path) -> int:
    """``--check`` (exit 1 when stale), ``--stdout`` (print), or rewrite README.md between the markers."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md is out of date")
    mode.add_argument("--stdout", action="store_true", help=f"print the {what} instead of writing README.md")
    parser.add_argument("--readme", type=Path, default=readme)
    args = parser.parse_args(argv)
    text = generate()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    old = args.readme.read_text(encoding="utf-8")
    updated = splice(old, start_marker, end_marker, text)
    if args.check:
        if updated != old:
            print(f"{args.readme} {what} is out of date; regenerate with: {regenerate}", file=sys.stderr)
            return 1
        return 0
    if updated != old:
        args.readme.write_text(updated, encoding="utf-8")
        print(f"updated the {what} in {args.readme}")
    else:
        print(f"{args.readme} is up to date")
    return 0
