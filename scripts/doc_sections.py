"""Generated sections of the documentation pages: text between two HTML-comment markers in a page of
``docs/``, rewritten or checked by a script (``spec_reference.py``: the spec reference in docs/spec.md;
``families_table.py``: the encoder support table in docs/families.md). The text around the markers is
written by hand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def splice(page: str, start_marker: str, end_marker: str, text: str) -> str:
    """``page`` with the text between the markers replaced by ``text``."""
    start, end = page.find(start_marker), page.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"the page needs the markers {start_marker} and {end_marker} (in that order)")
    return page[: start + len(start_marker)] + "\n" + text + page[end:]


def section(page: str, start_marker: str, end_marker: str) -> str:
    """The text between the markers."""
    start, end = page.find(start_marker), page.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"the page needs the markers {start_marker} and {end_marker} (in that order)")
    return page[start + len(start_marker): end].lstrip("\n")


def main(argv: list[str] | None, *, doc: str, generate: Callable[[], str], start_marker: str, end_marker: str,
         what: str, regenerate: str, page: Path) -> int:
    """``--check`` (exit 1 when stale), ``--stdout`` (print), or rewrite the page between the markers."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help=f"exit 1 when {page.name} is out of date")
    mode.add_argument("--stdout", action="store_true", help=f"print the {what} instead of writing the page")
    parser.add_argument("--page", type=Path, default=page, help=f"the page to rewrite or check (default: {page})")
    args = parser.parse_args(argv)
    text = generate()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    old = args.page.read_text(encoding="utf-8")
    updated = splice(old, start_marker, end_marker, text)
    if args.check:
        if updated != old:
            print(f"{args.page} {what} is out of date; regenerate with: {regenerate}", file=sys.stderr)
            return 1
        return 0
    if updated != old:
        args.page.write_text(updated, encoding="utf-8")
        print(f"updated the {what} in {args.page}")
    else:
        print(f"{args.page} is up to date")
    return 0
