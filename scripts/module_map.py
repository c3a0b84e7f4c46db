"""Write the module map of the architecture docs (docs/architecture/modules.md) from the module docstrings.

    .venv/bin/python scripts/module_map.py            # rewrite docs/architecture/modules.md
    .venv/bin/python scripts/module_map.py --check    # exit 1 when the page is out of date
    .venv/bin/python scripts/module_map.py --stdout   # print the page

Walks every ``quantkit/**/*.py`` file (``__pycache__`` excluded) and reads its docstring with ``ast``:
nothing is imported, so it runs with any Python 3.11 and no dependencies. Modules are grouped by package
(``quantkit``'s own modules first, then each subpackage of ``quantkit`` in path order, with everything under it) and listed in path order with the first sentence of
their docstring's first paragraph. The output depends only on the files, never on the machine, the clock
or the order the file system lists them in. tests/unit/test_docs.py fails when the committed page differs.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "quantkit"
PAGE = REPO / "docs" / "architecture" / "modules.md"
REGENERATE = ".venv/bin/python scripts/module_map.py"
MAX_SUMMARY = 200  # characters; a longer first sentence is cut at a word boundary

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")  # :class:`~quantkit.x.Y` -> `Y`, :mod:`quantkit.x` -> `quantkit.x`
_CODE = re.compile(r"(`[^`]*`)")


def _code(text: str) -> str:
    """reStructuredText inline code and roles as Markdown code spans."""
    text = _ROLE.sub(lambda m: "`" + (m.group(1).rsplit(".", 1)[-1] if m.group(0).count("~") else m.group(1)) + "`",
                     text)
    return text.replace("``", "`")


def _markdown(text: str) -> str:
    """A summary as Markdown for a table cell: nothing outside code spans that Markdown or HTML would read."""
    parts = _CODE.split(_code(text))
    for i, part in enumerate(parts):
        if i % 2 == 0:
            part = part.replace("\\", "\\\\").replace("*", "\\*").replace("_", "\\_")
            part = part.replace("<", "&lt;").replace(">", "&gt;")
        parts[i] = part.replace("|", "\\|")
    return "".join(parts)


def summary(docstring: str | None) -> str:
    """The first sentence of the docstring's first paragraph, on one line, inline code as Markdown code spans
    (empty without a docstring). A sentence over MAX_SUMMARY characters is cut at a word boundary outside code."""
    if not docstring or not docstring.strip():
        return ""
    paragraph = " ".join(docstring.strip().split("\n\n", 1)[0].split())
    sentence = _code(_SENTENCE_END.split(paragraph, 1)[0])
    if len(sentence) > MAX_SUMMARY:
        cut = sentence[:MAX_SUMMARY]
        if cut.count("`") % 2:  # inside a code span: cut before it
            cut = cut[: cut.rindex("`")]
        sentence = cut.rsplit(" ", 1)[0].rstrip(",;:—-– ") + " …"
    return sentence


def modules(root: Path = REPO) -> list[tuple[str, str, str]]:
    """(group, dotted module name, summary) of every module under ``root/quantkit``, in path order; the group
    is ``quantkit`` for the package's own modules, ``quantkit.<sub>`` for everything under a subfolder."""
    out = []
    files = sorted((p for p in (root / PACKAGE).rglob("*.py") if "__pycache__" not in p.parts),
                   key=lambda p: p.relative_to(root).as_posix())
    for path in files:
        rel = path.relative_to(root)
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel.as_posix())
        group = ".".join(rel.parts[:2]) if len(rel.parts) > 2 else PACKAGE
        out.append((group, ".".join(parts), summary(ast.get_docstring(tree))))
    return out


def render(root: Path = REPO) -> str:
    """The whole page."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for group, name, text in modules(root):
        groups.setdefault(group, []).append((name, text))
    lines = [
        f"<!-- generated from the module docstrings by scripts/module_map.py; regenerate with: {REGENERATE} -->",
        "",
        "# Module map",
        "",
        "Every module of the `quantkit` package with the first sentence of its docstring, grouped by package. "
        "The page is generated: change a module's docstring, then regenerate it with "
        f"`{REGENERATE}` (a test fails when it is stale). How the modules fit together: "
        "[Architecture](index.md).",
    ]
    for group in sorted(groups, key=lambda g: (g != PACKAGE, g)):
        lines += ["", f"## `{group}`", "", "| module | what it holds |", "|---|---|"]
        for name, text in groups[group]:
            lines.append(f"| `{name}` | {_markdown(text) if text else '*(no module docstring)*'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when the page is out of date")
    mode.add_argument("--stdout", action="store_true", help="print the page instead of writing it")
    parser.add_argument("--page", type=Path, default=PAGE, help=f"the page to write or check (default: {PAGE})")
    args = parser.parse_args(argv)
    text = render()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    old = args.page.read_text(encoding="utf-8") if args.page.is_file() else None
    if args.check:
        if old != text:
            print(f"{args.page} is out of date with the module docstrings; regenerate with: {REGENERATE}",
                  file=sys.stderr)
            return 1
        return 0
    if old != text:
        args.page.parent.mkdir(parents=True, exist_ok=True)
        args.page.write_text(text, encoding="utf-8")
        print(f"wrote {args.page}")
    else:
        print(f"{args.page} is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
