"""The README, the documentation site (docs/, mkdocs.yml) and the notebooks stay true to the code: the spec
reference, the family support matrix and the module map are generated (and a test fails, naming the command
that regenerates them, when a committed page is stale); every shell command in the README and the docs names
commands, options, scripts and test paths that exist; the README's links point at pages that exist; every page is
in the site's nav, every recipe and notebook is documented; and notebooks are committed without outputs (CI
executes them: tests/integration/test_notebooks.py). CI also builds the site with `mkdocs build --strict`."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import typer
import yaml
from conftest import REPO

from quantkit.cli import app

README = REPO / "README.md"
DOCS = REPO / "docs"
MKDOCS = REPO / "mkdocs.yml"
SPEC_PAGE = DOCS / "spec.md"
FAMILIES_PAGE = DOCS / "families.md"
MODULES_PAGE = DOCS / "architecture" / "modules.md"
CLI_PAGE = DOCS / "cli.md"
REGENERATE = ".venv/bin/python scripts/spec_reference.py"
README_MAX_LINES = 350

#: CLI commands the docs may document while a parallel branch is still adding them. The docs test
#: accepts them while they are missing; once one exists, test_pending_commands_are_still_missing
#: fails so that it is taken off this list (and then checked like every other command).
PENDING_COMMANDS: set[str] = set()


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spec_reference():
    return _script("spec_reference")


def doc_files() -> list[Path]:
    """The README and every page of the documentation site."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# --------------------------------------------------------------------------- spec reference
def test_spec_reference_page_is_up_to_date():
    ref = _spec_reference()
    assert ref.PAGE == SPEC_PAGE and ref.REGENERATE == REGENERATE
    text = SPEC_PAGE.read_text(encoding="utf-8")
    assert ref.START in text and ref.END in text, f"{_rel(SPEC_PAGE)} lost the markers {ref.START} / {ref.END}"
    assert ref.page_section(text) == ref.current_reference(), (
        f"{_rel(SPEC_PAGE)}'s spec reference is out of date with quantkit.spec; regenerate it with: {REGENERATE}"
    )


def test_spec_reference_covers_every_key_of_the_schema():
    """Generic: every property of every definition reachable from the root gets a table row."""
    from quantkit.schema import spec_json_schema

    ref = _spec_reference()
    schema = spec_json_schema()
    text = ref.render(schema)
    order, paths = ref._collect(schema)
    for name in schema["properties"]:
        assert f"| `{name}` |" in text
    for def_name in order:
        heading = "#### " + ", ".join(f"`{p}`" for p in paths[def_name])
        assert heading in text, heading
        section = text.split(heading, 1)[1].split("\n#### ", 1)[0]
        for key in schema["$defs"][def_name]["properties"]:
            assert f"| `{key}` |" in section, f"{def_name}.{key}"
    assert {"quantization.calibration", "data.evaluation", "evaluation.latency", "tuning.latency"} <= {
        p for ps in paths.values() for p in ps}


def test_spec_reference_renders_a_new_section_without_code_changes():
    """A section the generator has never seen (as other branches add `hardware:`) is rendered too."""
    ref = _spec_reference()
    schema = {
        "type": "object",
        "required": ["spec_version"],
        "properties": {
            "spec_version": {"const": 1, "type": "integer", "description": "v"},
            "hardware": {"anyOf": [{"$ref": "#/$defs/HardwareSpec"}, {"type": "null"}], "default": None,
                         "description": "Target CPU."},
        },
        "$defs": {"HardwareSpec": {"type": "object", "properties": {
            "isa": {"enum": ["auto", "avx2", "avx512_vnni"], "type": "string", "default": "auto",
                    "description": "Instruction set | to target."},
            "threads": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None},
            "shapes": {"type": "array", "items": {"type": "integer"}, "default": [1, 8]},
        }}},
    }
    text = ref.render(schema)
    assert "#### `hardware`" in text
    assert "| `isa` | `auto` \\| `avx2` \\| `avx512_vnni` | `auto` | Instruction set \\| to target. |" in text
    assert "| `threads` | integer (≥ 1) or null | `null` |  |" in text
    assert "| `shapes` | list of integer | `[1, 8]` |" in text
    assert "| `hardware` | mapping → `hardware` or null | `null` | Target CPU. |" in text


def test_spec_reference_check_mode(tmp_path):
    ref = _spec_reference()
    stale = tmp_path / "spec.md"
    stale.write_text(f"# x\n\n{ref.START}\nold\n{ref.END}\n\nafter\n", encoding="utf-8")
    assert ref.main(["--check", "--page", str(stale)]) == 1
    assert ref.main(["--page", str(stale)]) == 0
    assert ref.main(["--check", "--page", str(stale)]) == 0
    text = stale.read_text(encoding="utf-8")
    assert text.startswith("# x\n\n") and text.endswith(f"{ref.END}\n\nafter\n")


# --------------------------------------------------------------------------- family support table
def _families_table():
    return _script("families_table")


def test_support_table_page_is_up_to_date():
    """docs/families.md's table is rendered from quantkit/families.py, the data the support matrix asserts."""
    table = _families_table()
    assert table.PAGE == FAMILIES_PAGE
    text = FAMILIES_PAGE.read_text(encoding="utf-8")
    assert table.START in text and table.END in text, f"{_rel(FAMILIES_PAGE)} lost the markers {table.START} / {table.END}"
    assert table.page_section(text) == table.current_table(), (
        f"{_rel(FAMILIES_PAGE)}'s support table is out of date with quantkit/families.py; regenerate it with: "
        f"{table.REGENERATE}"
    )


def test_support_table_lists_every_family_and_cell(tmp_path):
    from quantkit.families import CELLS, FAMILIES, cell_status

    table = _families_table()
    text = table.current_table()
    for family in FAMILIES.values():
        row = next(line for line in text.splitlines() if line.startswith(f"| {family.name} (`{family.model_type}`)"))
        cells = row.strip("|").split(" | ")
        assert len(cells) == 3 + len(CELLS) + 3, row
        for cell, mark in zip(CELLS, cells[3:]):
            status = cell_status(family.model_type, "text-classification", cell)
            assert (mark != "✗") == (status == "yes"), (family.model_type, cell, mark, status)
    stale = tmp_path / "families.md"
    stale.write_text(f"# x\n\n{table.START}\nold\n{table.END}\n", encoding="utf-8")
    assert table.main(["--check", "--page", str(stale)]) == 1
    assert table.main(["--page", str(stale)]) == 0 and table.main(["--check", "--page", str(stale)]) == 0


# --------------------------------------------------------------------------- module map
def _module_map():
    return _script("module_map")


def test_module_map_page_is_up_to_date():
    """docs/architecture/modules.md is the module map of the code as it is: regenerated in memory, it must match."""
    mm = _module_map()
    assert mm.PAGE == MODULES_PAGE
    assert MODULES_PAGE.is_file(), f"{_rel(MODULES_PAGE)} is missing; generate it with: {mm.REGENERATE}"
    assert MODULES_PAGE.read_text(encoding="utf-8") == mm.render(), (
        f"{_rel(MODULES_PAGE)} is out of date with the modules and their docstrings; regenerate it with: "
        f"{mm.REGENERATE}"
    )


def test_module_map_lists_every_module_once():
    mm = _module_map()
    text = mm.render()
    files = [p for p in (REPO / "quantkit").rglob("*.py") if "__pycache__" not in p.parts]
    assert files
    for path in files:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        assert text.count(f"| `{name}` |") == 1, name


def test_module_map_is_deterministic_and_reads_docstrings_only(tmp_path):
    """The same files give the same page whatever order they were written in; nothing is imported."""
    mm = _module_map()
    sources = {
        "quantkit/__init__.py": '"""The package."""\n',
        "quantkit/zeta.py": '"""Zeta: last of the top level. More text here.\n\nSecond paragraph."""\nraise SystemExit(1)\n',
        "quantkit/alpha.py": "x = 1\n",
        "quantkit/sub/__init__.py": '"""A subpackage, see :class:`~quantkit.sub.b.Thing` and ``code | pipe``."""\n',
        "quantkit/sub/b.py": '"""B: uses :mod:`quantkit.sub` and a * star and <tag>."""\n',
        "quantkit/sub/deep/c.py": '"""' + "word " * 80 + '"""\n',
        "quantkit/sub/d.py": '"""' + "word " * 38 + ':func:`quantkit.sub.a_function_whose_name_crosses_the_cut` end."""\n',
    }
    pages = []
    for order in (sorted(sources), sorted(sources, reverse=True)):
        root = tmp_path / str(len(pages))
        for rel in order:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(sources[rel], encoding="utf-8")
        (root / "quantkit" / "__pycache__").mkdir()
        (root / "quantkit" / "__pycache__" / "stale.py").write_text('"""Not a module."""\n', encoding="utf-8")
        pages.append(mm.render(root))
    assert pages[0] == pages[1]
    text = pages[0]
    assert "Not a module" not in text and "__pycache__" not in text
    assert text.index("## `quantkit`") < text.index("## `quantkit.sub`")
    assert text.index("| `quantkit.alpha` |") < text.index("| `quantkit.zeta` |")
    assert "| `quantkit.alpha` | *(no module docstring)* |" in text
    assert "| `quantkit.zeta` | Zeta: last of the top level. |" in text
    assert "| `quantkit.sub` | A subpackage, see `Thing` and `code \\| pipe`. |" in text
    assert "| `quantkit.sub.b` | B: uses `quantkit.sub` and a \\* star and &lt;tag&gt;. |" in text
    deep = next(line for line in text.splitlines() if line.startswith("| `quantkit.sub.deep.c` |"))
    assert deep.endswith(" … |") and len(deep) < mm.MAX_SUMMARY + 40  # grouped under quantkit.sub, cut short
    cut = next(line for line in text.splitlines() if line.startswith("| `quantkit.sub.d` |"))
    assert cut.endswith("word … |") and cut.count("`") == 2, cut  # never a code span cut in half


def test_module_map_check_mode(tmp_path):
    mm = _module_map()
    page = tmp_path / "modules.md"
    assert mm.main(["--check", "--page", str(page)]) == 1  # missing
    assert mm.main(["--page", str(page)]) == 0
    assert mm.main(["--check", "--page", str(page)]) == 0
    page.write_text(page.read_text(encoding="utf-8") + "edited\n", encoding="utf-8")
    assert mm.main(["--check", "--page", str(page)]) == 1


# --------------------------------------------------------------------------- commands in the README and the docs
@dataclass(frozen=True)
class Command:
    where: str
    line: int
    text: str
    tokens: tuple[str, ...]


_FENCE = re.compile(r"^```(\w*)\s*$")


def doc_commands(path: Path = README) -> list[Command]:
    """Every command in a Markdown file's bash/sh code blocks (comments dropped, `&&` chains split)."""
    commands: list[Command] = []
    lang, start = None, 0
    lines = path.read_text(encoding="utf-8").splitlines()
    buffer = ""
    for number, line in enumerate(lines, 1):
        fence = _FENCE.match(line.strip())
        if fence:
            lang = None if lang is not None else fence.group(1)
            continue
        if lang not in ("bash", "sh", "shell"):
            continue
        if not buffer:
            start = number
        buffer += line.rstrip("\\") + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        lexer = shlex.shlex(buffer, posix=True, punctuation_chars="&|;")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        part: list[str] = []
        for token in [*lexer, "&&"]:
            if token in ("&&", "||", ";", "|", "&"):
                if part:
                    commands.append(Command(_rel(path), start, buffer.strip(), tuple(part)))
                part = []
            else:
                part.append(token)
        buffer = ""
    return commands


def readme_commands() -> list[Command]:
    return doc_commands(README)


def all_commands() -> list[Command]:
    return [c for path in doc_files() for c in doc_commands(path)]


def _strip_env(tokens: tuple[str, ...]) -> tuple[str, ...]:
    """Drop `VAR=value` prefixes (`RAY_ADDRESS=... quantkit tune ...`)."""
    while tokens and re.match(r"^[A-Z_]+=", tokens[0]):
        tokens = tokens[1:]
    return tokens


def _quantkit_argv(tokens: tuple[str, ...]) -> list[str] | None:
    tokens = _strip_env(tokens)
    if not tokens:
        return None
    head = tokens[0]
    if head in ("quantkit", ".venv/bin/quantkit", ".venv-optimum/bin/quantkit"):
        return list(tokens[1:])
    if len(tokens) > 2 and tokens[1:3] == ("-m", "quantkit"):
        return list(tokens[3:])
    return None


def _usage_tokens(argv: list[str]) -> list[str]:
    """Drop usage notation: `[--opt VALUE]` brackets; `...` ends the checked part."""
    out = []
    for token in argv:
        if token == "...":
            break
        token = token.strip("[]")
        if token and token not in ("/", "|"):
            out.append(token)
    return out


def _check_params(command, argv: list[str], where: str) -> list[str]:
    """Walk argv against one (click) command of the typer app; return what does not exist. A group hands
    over to its subcommand. Typer vendors click, so parameters are told apart by ``param_type_name``."""
    problems = []
    options = {name: p for p in command.params if p.param_type_name == "option" for name in (*p.opts, *p.secondary_opts)}
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    i, positional = 0, 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("-") and token != "-":
            name = token.split("=", 1)[0]
            option = options.get(name)
            if option is None:
                problems.append(f"{where}: {command.name or 'quantkit'} has no option {name}")
                if "=" not in token and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                    i += 1  # most likely its value
            elif not (option.is_flag or option.count) and "=" not in token:
                i += 1  # its value
        elif hasattr(command, "commands"):
            sub = command.commands.get(token)
            if sub is None:
                if token not in PENDING_COMMANDS:
                    problems.append(f"{where}: no command `quantkit {token}` (commands: {', '.join(command.commands)})")
                return problems
            return problems + _check_params(sub, argv[i + 1:], where)
        else:
            positional += 1
            if positional > len(arguments) and not any(a.nargs == -1 for a in arguments):
                problems.append(f"{where}: `quantkit {command.name}` takes no argument {token!r}")
        i += 1
    return problems


def _documented(commands: list[Command]) -> set[str]:
    return {_usage_tokens(_quantkit_argv(c.tokens))[0] for c in commands if _usage_tokens(_quantkit_argv(c.tokens))}


def test_documented_quantkit_commands_exist():
    """A renamed or removed command or option breaks this test (the README and the docs must follow)."""
    group = typer.main.get_command(app)
    readme = [c for c in readme_commands() if _quantkit_argv(c.tokens) is not None]
    assert len(readme) >= 8, [c.text for c in readme]
    commands = [c for c in all_commands() if _quantkit_argv(c.tokens) is not None]
    problems = []
    for c in commands:
        problems += _check_params(group, _usage_tokens(_quantkit_argv(c.tokens)), f"{c.where}:{c.line} `{c.text}`")
    assert not problems, "\n".join(problems)
    missing = set(group.commands) - _documented(readme)
    assert not missing, f"the README's CLI section does not show: {sorted(missing)}"
    missing = set(group.commands) - _documented(doc_commands(CLI_PAGE))
    assert not missing, f"{_rel(CLI_PAGE)} does not show: {sorted(missing)}"


def test_pending_commands_are_still_missing():
    group = typer.main.get_command(app)
    landed = PENDING_COMMANDS & set(group.commands)
    assert not landed, f"{sorted(landed)} exist now: remove them from PENDING_COMMANDS in {Path(__file__).name}"


def test_docs_checker_catches_a_renamed_option():
    group = typer.main.get_command(app)
    assert _check_params(group, ["quantize", "--cfg", "x.yaml"], "t") == ["t: quantize has no option --cfg"]
    assert _check_params(group, ["quantise", "--config", "x.yaml"], "t")[0].startswith("t: no command `quantkit quantise`")
    assert _check_params(group, _usage_tokens(["-v", "push", "DIR", "--repo-id", "o/n", "[--private]"]), "t") == []
    assert _quantkit_argv(("RAY_ADDRESS=h:6379", "quantkit", "tune")) == ["tune"]


@cache
def _script_help(script: str) -> str:
    return subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True, text=True, cwd=REPO,
                          timeout=120).stdout


def test_documented_other_commands_refer_to_what_exists():
    """setup.sh, the pytest marker expressions and test paths, the scripts and their options, mkdocs,
    hf (huggingface_hub's CLI), ray: in the README and in every page of the docs."""
    markers = {m.split(":")[0] for m in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
               ["ini_options"]["markers"]}
    seen = set()
    problems = []
    for c in all_commands():
        tokens = list(_strip_env(c.tokens))
        if not tokens or _quantkit_argv(tuple(tokens)) is not None:
            continue
        head = tokens[0]
        where = f"{c.where}:{c.line} `{c.text}`"
        if head == "bash":
            seen.add("bash")
            if not (REPO / tokens[1]).is_file():
                problems.append(f"{where}: {tokens[1]} does not exist")
        elif head in (".venv/bin/python", ".venv-optimum/bin/python", "python") and tokens[1:3] == ["-m", "pytest"]:
            seen.add("pytest")
            if "-m" in tokens[3:]:
                expression = tokens[tokens.index("-m", 3) + 1]
                names = set(re.findall(r"[a-z_]+", expression)) - {"and", "or", "not"}
                if names - markers:
                    problems.append(f"{where}: unknown pytest markers {sorted(names - markers)}")
            for path in tokens[3:]:
                if path.startswith("tests/") and not (REPO / path.split("::")[0]).exists():
                    problems.append(f"{where}: {path} does not exist")
        elif head in (".venv/bin/python", ".venv-optimum/bin/python", "python") and tokens[1].endswith(".py"):
            seen.add("script")
            script = REPO / tokens[1]
            if not script.is_file():
                problems.append(f"{where}: {tokens[1]} does not exist")
                continue
            options = {t.split("=")[0] for t in tokens[2:] if t.startswith("--")}
            if options:
                help_text = _script_help(tokens[1])
                problems += [f"{where}: {tokens[1]} has no option {o}" for o in sorted(options) if o not in help_text]
        elif head == ".venv/bin/mkdocs":
            seen.add("mkdocs")
            if tokens[1:2] not in (["build"], ["serve"]) or not MKDOCS.is_file():
                problems.append(f"{where}: not an mkdocs command the docs mean to show (build or serve, with mkdocs.yml)")
        elif head == "ray":  # the Ray cluster commands of docs/ray.md
            if tokens[1:2] not in (["start"], ["stop"], ["status"]):
                problems.append(f"{where}: not a ray command the docs mean to show")
        elif head == "hf":  # huggingface_hub's CLI: the login command the Hub page shows
            if tokens[1:3] != ["auth", "login"] or not (Path(sys.executable).parent / "hf").is_file():
                problems.append(f"{where}: not the `hf auth login` of the installed huggingface_hub")
        elif head in ("export", "cd", "git", "pip"):
            continue
        else:
            problems.append(f"{where}: the test does not know how to check `{head}`; teach it")
    assert not problems, "\n".join(problems)
    assert seen >= {"bash", "pytest", "script", "mkdocs"}


def test_readme_first_commands_are_what_ci_runs():
    """The two set-up commands open the README, and .ci/run runs the second one verbatim, and builds the docs."""
    first = list(dict.fromkeys(c.text for c in readme_commands()))[:2]
    assert first[0].startswith("bash scripts/setup.sh && .venv/bin/quantkit quantize --model ../shared/models/minilm-spam")
    assert first[1] == "bash scripts/setup.sh && .venv/bin/python -m pytest"
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert first[1] in ci
    assert ".venv/bin/python -m pytest -m 'slow and not optimum and not heavy'" in ci
    assert "bash scripts/setup.sh --stack optimum" in ci and ".venv-optimum/bin/python -m pytest -m optimum" in ci
    assert re.search(r"^[A-Z_=0-9 ]*\.venv/bin/mkdocs build --strict", ci, re.M), ".ci/run must build the docs strictly"


# --------------------------------------------------------------------------- the README and the site
def _slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension gives a heading (code, links and emphasis as their text)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*]", "", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(path: Path) -> set[str]:
    anchors, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6}\s+(.*?)\s*#*$", line)):
            anchors.add(_slug(m.group(1)))
    return anchors


def test_readme_is_short_and_its_links_resolve():
    """README ≤ 350 lines; every relative link points at a file that exists, and at a heading there."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, f"README.md has {len(text.splitlines())} lines; move detail to docs/"
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(link.startswith("docs/") for link in links)
    problems = []
    for link in links:
        if re.match(r"^[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        path = REPO / target if target else README
        if not path.exists():
            problems.append(f"README.md links to {link}: {target} does not exist")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            problems.append(f"README.md links to {link}: no heading with that anchor in {target or 'README.md'}")
    assert not problems, "\n".join(problems)


def test_slug_matches_the_toc_extension():
    assert _slug("Fused graph first, minus one fusion") == "fused-graph-first-minus-one-fusion"
    assert _slug("Serving an artifact: `quantkit.runtime`") == "serving-an-artifact-quantkitruntime"
    assert _slug("Reference model, AVX2 without VNNI, 2026-12-01") == "reference-model-avx2-without-vnni-2026-12-01"


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return []


def test_mkdocs_nav_lists_every_page():
    """Every page in docs/ is in the nav and every nav entry exists (mkdocs --strict checks links and anchors)."""
    config = yaml.safe_load(MKDOCS.read_text(encoding="utf-8"))
    assert config["theme"]["name"] == "material" and config["strict"] is True
    nav = _nav_pages(config["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, f"nav vs docs/: missing {sorted(set(pages) - set(nav))}, extra {sorted(set(nav) - set(pages))}"
    assert len(nav) == len(set(nav))


def test_docs_extra_is_pinned_in_constraints():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    docs = project["optional-dependencies"]["docs"]
    constraints = (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
    assert {d.split("==")[0] for d in docs} == {"mkdocs", "mkdocs-material"}
    for pin in docs:
        assert "==" in pin and pin in constraints, f"{pin} is not pinned in constraints.txt"
    assert 'EXTRAS="dev,ray,docs"' in (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")


def test_every_recipe_and_notebook_is_documented():
    recipes_page = (DOCS / "recipes.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted((REPO / "recipes").glob("*.yaml")) if f"| `{p.name}` |" not in recipes_page]
    assert not missing, f"docs/recipes.md has no row for {missing}"
    notebooks_page = (DOCS / "notebooks.md").read_text(encoding="utf-8")
    missing = [p.name for p in NOTEBOOKS if f"`{p.name}`" not in notebooks_page]
    assert not missing, f"docs/notebooks.md does not describe {missing}"


def test_readme_measured_table_is_the_measurements_page_one():
    """The README's one measured table (with its CPU statement) is also on docs/measurements.md, unchanged."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model | metric |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    assert len(table) >= 4
    section = README.read_text(encoding="utf-8").split("## Measured on the reference model", 1)[1].split("\n## ", 1)[0]
    assert "Intel" in section and "cores" in section and "bench/tasks_table.py" in section, "keep the CPU and the command"
    assert "\n".join(table) in (DOCS / "measurements.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- notebooks
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path):
    """The file in git (HEAD when committed, else the working copy) has no outputs or execution counts."""
    rel = path.relative_to(REPO).as_posix()
    shown = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=REPO, capture_output=True, text=True)
    text = shown.stdout if shown.returncode == 0 else path.read_text(encoding="utf-8")
    for label, content in (("committed", text), ("working copy", path.read_text(encoding="utf-8"))):
        nb = json.loads(content)
        dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
                 and (c.get("outputs") or c.get("execution_count") is not None)]
        assert not dirty, (f"{rel} ({label}) has outputs in cells {dirty}; strip them, e.g. with "
                           f"jupyter nbconvert --clear-output --inplace {rel}")
        assert "widgets" not in nb.get("metadata", {}), f"{rel} ({label}) carries widget state"


def test_readme_spec_in_code_validates_and_matches_the_recipe():
    """The README's spec-in-code example: the dict in it parses, its data file exists beside the repository (as the
    README's commands assume), and it quantizes as the reference recipe does."""
    import ast

    from quantkit.specio import load_spec, parse_spec

    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
                 if "parse_spec(" in b)
    call = next(n for n in ast.walk(ast.parse(block)) if isinstance(n, ast.Call) and getattr(n.func, "id", "")
                == "parse_spec")
    raw = ast.literal_eval(call.args[0])
    spec = parse_spec(raw)
    assert (REPO / spec.data.evaluation.path).is_file()
    recipe = load_spec(REPO / "recipes" / "minilm-spam-dynamic.yaml")
    assert spec.quantization == recipe.quantization
    assert (spec.model.task, spec.data.max_length) == (recipe.model.task, recipe.data.max_length)
