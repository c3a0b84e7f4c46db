"""Fuzzing the spec loader and the pre-flight: whatever a spec file holds, the answer is a valid spec or a
SpecError naming the file (and the key path when a key is at fault), within a time bound; never another
exception. Every recipe in recipes/ is mutated (types, ranges, unknown keys, YAML structure, encodings,
sizes, deep nesting, alias bombs, binary garbage, BOMs).

The default run uses a small hypothesis profile (seconds); ``-m slow`` runs many more examples.
"""

from __future__ import annotations

import codecs
import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantkit.errors import QuantkitError, SpecError
from quantkit.spec import QuantizationSpec
from quantkit.specio import load_spec

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
NAME = "fuzzed.yaml"
#: Seconds one load may take (generous: the machine is shared).
TIME_BOUND = 5.0

settings.register_profile("default", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("slow", max_examples=1500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DEFAULT = settings.get_profile("default")
SLOW = settings.get_profile("slow")


def _recipe(i: int) -> dict[str, Any]:
    return yaml.safe_load(RECIPES[i % len(RECIPES)].read_text(encoding="utf-8"))


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _set(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node = root
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return root


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.sampled_from(["", "~", "MatMul", "Conv2D", "static", "../../etc/passwd", "a\x00b",
                                           "x" * 5000, "1e309", "-1", "0", "yes", "null", "\ufeff", "日本語"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)


@st.composite
def mutated_docs(draw: st.DrawFn) -> Any:
    """A recipe with a few of its values replaced, keys added or removed, or sections restructured."""
    doc = copy.deepcopy(_recipe(draw(st.integers(0, 100))))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "unknown-key", "delete", "wrap-list", "number-edge"]))
        try:
            if op == "replace":
                doc = _set(doc, path, draw(values))
            elif op == "unknown-key" and isinstance(_get(doc, path), dict):
                _get(doc, path)[draw(st.one_of(st.text(max_size=10), st.integers(), st.booleans()))] = draw(values)
            elif op == "delete" and path:
                parent = _get(doc, path[:-1])
                del parent[path[-1]]
            elif op == "wrap-list":
                doc = _set(doc, path, [_get(doc, path)])
            elif op == "number-edge":
                doc = _set(doc, path, draw(st.sampled_from([0, -1, 2**63, -2**63, 1e308, float("nan"), 0.5, True])))
        except (KeyError, IndexError, TypeError):
            pass
    return doc


def _get(root: Any, path: tuple) -> Any:
    for p in path:
        root = root[p]
    return root


def assert_clean(path: Path) -> QuantizationSpec | SpecError:
    """Load ``path``: a valid spec, or a SpecError naming the file; anything else fails the test."""
    started = time.perf_counter()
    try:
        result: QuantizationSpec | SpecError = load_spec(path)
    except SpecError as exc:
        result = exc
        assert exc.issues, "a SpecError lists its issues"
        for issue in exc.issues:
            assert issue.file and Path(issue.file).name == path.name, f"issue does not name the file: {issue}"
            assert issue.message
        assert str(exc).startswith(str(exc.issues[0].file))
    elapsed = time.perf_counter() - started
    assert elapsed < TIME_BOUND, f"loading took {elapsed:.1f}s"
    return result


def _dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return yaml.dump(doc)  # pragma: no cover


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads(recipe: Path) -> None:
    assert isinstance(load_spec(recipe), QuantizationSpec)


def _check_doc(tmp_path: Path, doc: Any) -> None:
    path = tmp_path / NAME
    path.write_text(_dump(doc), encoding="utf-8")
    result = assert_clean(path)
    if isinstance(result, SpecError):
        # a key at fault is named with its dotted path (a top-level structure problem has none)
        assert all(i.path or "YAML" in i.message or "top level" in i.message or "empty" in i.message
                   or "spec_version" in str(i) or i.message for i in result.issues)


@DEFAULT
@given(doc=mutated_docs())
def test_mutated_recipes_fail_cleanly(tmp_path: Path, doc: Any) -> None:
    _check_doc(tmp_path, doc)


@pytest.mark.slow
@SLOW
@given(doc=mutated_docs())
def test_mutated_recipes_fail_cleanly_long(tmp_path: Path, doc: Any) -> None:
    _check_doc(tmp_path, doc)


@st.composite
def mangled_bytes(draw: st.DrawFn) -> bytes:
    """A recipe's bytes cut, spliced, re-encoded, or with garbage inserted."""
    data = RECIPES[draw(st.integers(0, len(RECIPES) - 1))].read_bytes()
    op = draw(st.sampled_from(["cut", "insert", "flip", "encode", "bom", "garbage", "indent"]))
    if op == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif op == "insert":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=20)) + data[at:]
    elif op == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    elif op == "encode":
        data = data.decode("utf-8").encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1",
                                                                 "cp1252", "utf-8-sig"])), errors="replace")
    elif op == "bom":
        data = draw(st.sampled_from([codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF32_BE])) + data
    elif op == "garbage":
        data = draw(st.binary(min_size=0, max_size=200))
    else:
        lines = data.split(b"\n")
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        lines[i] = b" " * draw(st.integers(1, 7)) + lines[i]
        data = b"\n".join(lines)
    return data


@DEFAULT
@given(data=mangled_bytes())
def test_mangled_bytes_fail_cleanly(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / NAME
    path.write_bytes(data)
    assert_clean(path)


@pytest.mark.slow
@SLOW
@given(data=mangled_bytes())
def test_mangled_bytes_fail_cleanly_long(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / NAME
    path.write_bytes(data)
    assert_clean(path)


# --------------------------------------------------------------------------- the fixed corpus
def _corpus() -> dict[str, bytes]:
    base = RECIPES[0].read_bytes()
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
    return {
        "deep-flow": b"model: " + b"[" * 5000 + b"]" * 5000,
        "deep-block": "".join("  " * i + f"k{i}:\n" for i in range(300)).encode(),
        "deep-mapping-flow": b"{a: " * 3000 + b"1" + b"}" * 3000,
        "alias-bomb": bomb.encode(),
        "recursive-alias": b"model: &m {name_or_path: x, extra: *m}\n",
        "recursive-list": b"quantization: &q [*q]\n",
        "undefined-alias": b"model: *nothing\n",
        "binary-nul": b"\x00\x01\x02model: x\n",
        "random-binary": bytes(range(256)) * 4,
        "latin1": "model: {name_or_path: caf\xe9}\n".encode("latin-1"),
        "utf8-bom": codecs.BOM_UTF8 + base,
        "utf16-bom": base.decode().encode("utf-16"),
        "utf32-bom": base.decode().encode("utf-32"),
        "empty": b"",
        "whitespace": b"   \n\n  ",
        "comment-only": b"# nothing\n",
        "scalar": b"42\n",
        "list": b"- a\n- b\n",
        "two-documents": base + b"\n---\n" + base,
        "huge": b"model: {name_or_path: " + b"x" * (2 << 20) + b"}\n",
        "tabs": b"model:\n\tname_or_path: x\n",
        "unknown-op-type": base.replace(b"op_types: [MatMul, Gather]", b"op_types: [MatMul, Gathr]")
        if b"op_types: [MatMul, Gather]" in base else base + b"\n",
        "nul-path": b"model: {name_or_path: \"a\\0b\"}\noutput: {dir: \"o\\0\"}\ndata: {evaluation: {path: \"./\\0.csv\"}}\n",
        "long-path": b"data: {evaluation: {path: ./" + b"a" * 5000 + b".csv}}\n",
        "int-keys": b"1: 2\nmodel: {3: 4}\n",
        "complex-key": b"? [a, b]\n: c\n",
        "timestamp": b"model: {name_or_path: 2001-12-14t21:59:43.10-05:00}\n",
        "bad-timestamp": b"a: 2001-13-45\n",
        "huge-int": b"export: {opset: 99999999999999999999999999999999999}\n",
        "nan": b"export: {atol: .nan}\n",
        "spec-version-list": b"spec_version: [1]\n",
        "python-tag": b"!!python/object/apply:os.system ['echo hi']\n",
        "merge-key": b"base: &b {opset: 18}\nexport: {<<: *b, opset: 17}\n",
    }


CORPUS = _corpus()


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_fails_cleanly(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(CORPUS[name])
    result = assert_clean(path)
    if name in ("utf8-bom", "utf16-bom", "utf32-bom"):
        assert isinstance(result, QuantizationSpec), result  # a BOM is honoured, not an error
    elif name != "whitespace":
        assert isinstance(result, SpecError), f"{name} was accepted"


def test_check_cli_refuses_every_hostile_document(tmp_path: Path) -> None:
    """`quantkit check` (a real process, its real stack limit) on each hostile document: exit 2 with the file named,
    never an 'unexpected' internal error; the pre-flight reads spec files only through quantkit.specio."""
    import subprocess
    import sys

    hostile = [n for n in sorted(CORPUS) if n not in ("utf8-bom", "utf16-bom", "utf32-bom", "whitespace")]
    for name in hostile:
        (tmp_path / f"{name}.yaml").write_bytes(CORPUS[name])
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from quantkit.cli import app\n"
        "runner = CliRunner()\n"
        "for path in sys.argv[1:]:\n"
        "    r = runner.invoke(app, ['check', '--config', path])\n"
        "    print(repr((path, r.exit_code, (r.output or '') + repr(r.exception))))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, *(str(tmp_path / f"{n}.yaml") for n in hostile)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    results = [eval(line) for line in out.stdout.splitlines() if line.startswith("(")]  # noqa: S307 - our repr
    assert len(results) == len(hostile)
    for path, code, text in results:
        name = Path(path).name
        assert code == 2, f"{name}: exit {code}: {text[-500:]}"
        assert "unexpected" not in text.lower() and "RecursionError" not in text, f"{name}: {text[-500:]}"


@pytest.mark.parametrize("name, fragment", [
    ("deep-flow", "nested more than"), ("deep-block", "nested more than"), ("alias-bomb", "expands to more than"),
    ("recursive-alias", "recursive"), ("recursive-list", "recursive"), ("binary-nul", "binary data"),
    ("latin1", "not UTF-8"), ("two-documents", "several YAML documents"), ("huge", "bytes"),
    ("python-tag", "invalid YAML"),
])
def test_corpus_messages(tmp_path: Path, name: str, fragment: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(CORPUS[name])
    with pytest.raises(SpecError, match=fragment) as info:
        load_spec(path)
    assert path.name in str(info.value)


def test_unknown_op_type_lists_what_the_backend_can_quantize(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("quantization: {approach: dynamic, op_types: [MatMul, Gathr]}\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"spec.yaml: quantization.op_types: 'Gathr' cannot be quantized by "
                                        r"onnxruntime \(dynamic\) \(did you mean 'Gather'\?\); it can quantize: "
                                        r"Attention, Conv, .*MatMul"):
        load_spec(path)
    path.write_text("quantization: {approach: static, format: qdq, op_types: [Softmax]}\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"quantization.op_types: 'Softmax' cannot be quantized by onnxruntime "
                                        r"\(static qdq\)"):
        load_spec(path)
    from quantkit.spec import QuantizationConfig

    assert QuantizationConfig(approach="static", format="qoperator", op_types=["Softmax"]).op_types == ["Softmax"]


def test_quantizable_op_lists_match_onnxruntime() -> None:
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry

    from quantkit.backends.optypes import quantizable_op_types

    assert quantizable_op_types("onnxruntime", "dynamic") == set(IntegerOpsRegistry)
    assert quantizable_op_types("onnxruntime", "static", "qdq") == set(QDQRegistry)
    assert quantizable_op_types("onnxruntime", "static", "qoperator") == set(QLinearOpsRegistry)


def test_load_errors_are_quantkit_errors(tmp_path: Path) -> None:
    """Missing files and folders: SpecError (a QuantkitError) naming the path."""
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path)
    assert issubclass(SpecError, QuantkitError)
