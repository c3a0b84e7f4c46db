"""The README and the notebooks stay true to the code: the spec reference is generated from the schema,
every shell command in the README names commands and options that exist, and notebooks are committed
without outputs (CI executes them: tests/integration/test_notebooks.py)."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from conftest import REPO

from quantkit.cli import app

README = REPO / "README.md"
REGENERATE = ".venv/bin/python scripts/spec_reference.py"

#: CLI commands the README may document while a parallel branch is still adding them. The README test
#: accepts them while they are missing; once one exists, test_pending_commands_are_still_missing
#: fails so that it is taken off this list (and then checked like every other command).
PENDING_COMMANDS: set[str] = set()


def _spec_reference():
    spec = importlib.util.spec_from_file_location("spec_reference", REPO / "scripts" / "spec_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- spec reference
def test_readme_spec_reference_is_up_to_date():
    ref = _spec_reference()
    text = README.read_text(encoding="utf-8")
    assert ref.START in text and ref.END in text, f"README.md lost the markers {ref.START} / {ref.END}"
    assert ref.readme_section(text) == ref.current_reference(), (
        f"README.md's spec reference is out of date with quantkit.spec; regenerate it with: {REGENERATE}"
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
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{ref.START}\nold\n{ref.END}\n\nafter\n", encoding="utf-8")
    assert ref.main(["--check", "--readme", str(stale)]) == 1
    assert ref.main(["--readme", str(stale)]) == 0
    assert ref.main(["--check", "--readme", str(stale)]) == 0
    text = stale.read_text(encoding="utf-8")
    assert text.startswith("# x\n\n") and text.endswith(f"{ref.END}\n\nafter\n")


# --------------------------------------------------------------------------- family support table
def _families_table():
    spec = importlib.util.spec_from_file_location("families_table", REPO / "scripts" / "families_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_support_table_is_up_to_date():
    """The README's family table is rendered from quantkit/families.py, the data the support matrix asserts."""
    table = _families_table()
    text = README.read_text(encoding="utf-8")
    assert table.START in text and table.END in text, f"README.md lost the markers {table.START} / {table.END}"
    assert table.readme_section(text) == table.current_table(), (
        f"README.md's support table is out of date with quantkit/families.py; regenerate it with: {table.REGENERATE}"
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
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{table.START}\nold\n{table.END}\n", encoding="utf-8")
    assert table.main(["--check", "--readme", str(stale)]) == 1
    assert table.main(["--readme", str(stale)]) == 0 and table.main(["--check", "--readme", str(stale)]) == 0


# --------------------------------------------------------------------------- README commands
@dataclass(frozen=True)
class Command:
    line: int
    text: str
    tokens: tuple[str, ...]


_FENCE = re.compile(r"^```(\w*)\s*$")


def readme_commands() -> list[Command]:
    """Every command in the README's bash/sh code blocks (comments dropped, `&&` chains split)."""
    commands: list[Command] = []
    lang, start = None, 0
    lines = README.read_text(encoding="utf-8").splitlines()
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
                    commands.append(Command(start, buffer.strip(), tuple(part)))
                part = []
            else:
                part.append(token)
        buffer = ""
    return commands


def _quantkit_argv(tokens: tuple[str, ...]) -> list[str] | None:
    head = tokens[0]
    if head in ("quantkit", ".venv/bin/quantkit"):
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


def test_readme_quantkit_commands_exist():
    """A renamed or removed command or option breaks this test (the README must follow)."""
    group = typer.main.get_command(app)
    commands = [c for c in readme_commands() if _quantkit_argv(c.tokens) is not None]
    assert len(commands) >= 8, [c.text for c in commands]
    problems = []
    for c in commands:
        problems += _check_params(group, _usage_tokens(_quantkit_argv(c.tokens)), f"README.md:{c.line} `{c.text}`")
    assert not problems, "\n".join(problems)
    documented = {_usage_tokens(_quantkit_argv(c.tokens))[0] for c in commands if _usage_tokens(_quantkit_argv(c.tokens))}
    missing = set(group.commands) - documented
    assert not missing, f"the README's CLI section does not show: {sorted(missing)}"


def test_pending_commands_are_still_missing():
    group = typer.main.get_command(app)
    landed = PENDING_COMMANDS & set(group.commands)
    assert not landed, f"{sorted(landed)} exist now: remove them from PENDING_COMMANDS in {Path(__file__).name}"


def test_readme_checker_catches_a_renamed_option():
    group = typer.main.get_command(app)
    assert _check_params(group, ["quantize", "--cfg", "x.yaml"], "t") == ["t: quantize has no option --cfg"]
    assert _check_params(group, ["quantise", "--config", "x.yaml"], "t")[0].startswith("t: no command `quantkit quantise`")
    assert _check_params(group, _usage_tokens(["-v", "push", "DIR", "--repo-id", "o/n", "[--private]"]), "t") == []


def test_readme_other_commands_refer_to_what_exists():
    """setup.sh, the pytest marker expressions, the scripts and their options, huggingface-cli."""
    markers = {m.split(":")[0] for m in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
               ["ini_options"]["markers"]}
    seen = set()
    problems = []
    for c in readme_commands():
        tokens = list(c.tokens)
        while tokens and re.match(r"^[A-Z_]+=", tokens[0]):  # VAR=value prefixes
            tokens = tokens[1:]
        if not tokens or _quantkit_argv(tuple(tokens)) is not None:
            continue
        head = tokens[0]
        where = f"README.md:{c.line} `{c.text}`"
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
                help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                                           cwd=REPO, timeout=120).stdout
                problems += [f"{where}: {tokens[1]} has no option {o}" for o in sorted(options) if o not in help_text]
        elif head == "ray":  # the Ray cluster commands of "Running on a Ray cluster"
            if tokens[1:2] not in (["start"], ["stop"], ["status"]):
                problems.append(f"{where}: not a ray command the README means to show")
        elif head in ("huggingface-cli", "export", "cd", "git", "pip"):
            continue
        else:
            problems.append(f"{where}: the test does not know how to check `{head}`; teach it")
    assert not problems, "\n".join(problems)
    assert seen >= {"bash", "pytest", "script"}


def test_readme_first_commands_are_what_ci_runs():
    """The two set-up commands open the README, and .ci/run runs the second one verbatim."""
    first = list(dict.fromkeys(c.text for c in readme_commands()))[:2]
    assert first[0].startswith("bash scripts/setup.sh && .venv/bin/quantkit quantize --model ../shared/models/minilm-spam")
    assert first[1] == "bash scripts/setup.sh && .venv/bin/python -m pytest"
    assert first[1] in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert ".venv/bin/python -m pytest -m 'slow and not optimum'" in ci
    assert "bash scripts/setup.sh --stack optimum" in ci and ".venv-optimum/bin/python -m pytest -m optimum" in ci


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
