"""Tests of the YAML spec: recipes, path resolution, error messages, schema, immutability."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from quantkit.specio import load_spec, parse_spec, with_overrides
import yaml
from conftest import DROP, override
from pydantic import ValidationError

from quantkit.errors import SpecError
from quantkit.schema import spec_json_schema, spec_json_schema_text
from quantkit.spec import QuantizationSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO_ROOT / "recipes").glob("*.yaml"))
SCHEMA_FILE = REPO_ROOT / "schema" / "quantkit-spec.schema.json"

MINIMAL: dict[str, Any] = {"spec_version": 1, "data": {"evaluation": {"path": "val.jsonl"}}}


# --------------------------------------------------------------------------- helpers
def make_spec(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The minimal valid spec with dotted-key changes applied (``DROP`` deletes a key)."""
    return override(MINIMAL, changes)


def write_spec(folder: Path, content: dict[str, Any] | list[Any] | str, name: str = "spec.yaml") -> Path:
    """Write a spec (a mapping/list dumped as YAML, or raw text) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> SpecError:
    """Load ``path`` expecting a SpecError, and return it."""
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value


def where(key_path: str) -> str:
    """The ``file: key.path: `` prefix expected in a message about bad.yaml."""
    return f"bad.yaml: {key_path}: " if key_path else "bad.yaml: "


# --------------------------------------------------------------------------- 1. recipes
def test_recipes_are_found() -> None:
    assert len(RECIPES) >= 3, f"expected at least 3 recipes in {REPO_ROOT / 'recipes'}, found {RECIPES}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_round_trips(recipe: Path) -> None:
    spec = load_spec(recipe)
    assert isinstance(spec, QuantizationSpec)
    again = parse_spec(yaml.safe_load(spec.to_yaml()))
    assert again.model_dump() == spec.model_dump()


# --------------------------------------------------------------------------- 2. paths
def test_relative_data_path_resolves_against_spec_folder(tmp_path: Path) -> None:
    spec_file = write_spec(tmp_path / "sub", make_spec({"data.evaluation.path": "../data/val.jsonl"}))
    spec = load_spec(spec_file)
    expected = (tmp_path / "data" / "val.jsonl").resolve()
    assert Path(spec.data.evaluation.path).is_absolute()
    assert Path(spec.data.evaluation.path) == expected
    assert spec.data.evaluation.is_local
    assert spec.data.evaluation.file_format == "json"


def test_relative_output_and_model_paths_resolve(tmp_path: Path) -> None:
    raw = make_spec({"model.name_or_path": "./models/tiny", "output.dir": "../out/run"})
    spec = load_spec(write_spec(tmp_path / "sub", raw))
    assert Path(spec.model.name_or_path) == (tmp_path / "sub" / "models" / "tiny").resolve()
    assert Path(spec.output.dir) == (tmp_path / "out" / "run").resolve()


def test_hub_ids_stay_untouched(tmp_path: Path) -> None:
    raw = make_spec(
        {
            "model.name_or_path": "textattack/bert-base-uncased-SST-2",
            "data.evaluation.path": "nyu-mll/glue",
            "data.evaluation.name": "sst2",
        }
    )
    spec = load_spec(write_spec(tmp_path / "sub", raw))
    assert spec.model.name_or_path == "textattack/bert-base-uncased-SST-2"
    assert spec.data.evaluation.path == "nyu-mll/glue"
    assert not spec.data.evaluation.is_local
    assert spec.data.evaluation.file_format is None


# --------------------------------------------------------------------------- 3. malformed specs
STATIC = {"quantization.approach": "static", "data.calibration": {"path": "train.jsonl"}}

# (id, content: changes to MINIMAL or raw YAML text, expected key path, expected message fragment)
BAD_SPECS: list[tuple[str, dict[str, Any] | str, str, str]] = [
    ("unknown-top-level-key", {"quantizaton": {"approach": "static"}}, "quantizaton",
     "unknown key; did you mean 'quantization'?"),
    ("unknown-nested-key", {"quantization.calibration.metod": "entropy"}, "quantization.calibration.metod",
     "did you mean 'method'?"),
    ("unknown-data-key", {"data.evaluation.colums": ["text"]}, "data.evaluation.colums", "unknown key"),
    ("bad-calibration-method", {"quantization.calibration.method": "entopy"}, "quantization.calibration.method",
     "'entopy' is not one of minmax, entropy, percentile"),
    ("bad-approach", {"quantization.approach": "awq"}, "quantization.approach",
     "'awq' is not one of dynamic, static, qat"),
    ("bad-format", {**STATIC, "quantization.format": "qlinear"}, "quantization.format",
     "'qlinear' is not one of qdq, qoperator"),
    ("bad-weight-type", {"quantization.weight_type": "int4"}, "quantization.weight_type",
     "'int4' is not one of int8, uint8"),
    ("negative-num-samples", {"quantization.calibration.num_samples": -5}, "quantization.calibration.num_samples",
     "greater than or equal to 1"),
    ("zero-calibration-batch-size", {"quantization.calibration.batch_size": 0},
     "quantization.calibration.batch_size", "greater than or equal to 1"),
    ("zero-evaluation-batch-size", {"evaluation.batch_size": 0}, "evaluation.batch_size",
     "greater than or equal to 1"),
    ("zero-latency-batch-size", {"evaluation.latency.batch_size": 0}, "evaluation.latency.batch_size",
     "greater than or equal to 1"),
    ("opset-too-high", {"export.opset": 22}, "export.opset", "less than or equal to 21"),
    ("tuning-space-unknown-field", {"tuning.space": {"calibration.metod": ["minmax"]}},
     "tuning.space.calibration.metod", "did you mean 'calibration.method'?"),
    ("tuning-space-bad-value", {"tuning.space": {"approach": ["dynamic", "awq"]}}, "tuning.space.approach.1",
     "'awq' is not one of dynamic, static, qat"),
    ("tuning-space-empty-list", {"tuning.space": {"per_channel": []}}, "tuning.space.per_channel",
     "needs at least one value"),
    ("tuning-static-without-calibration", {"tuning.space": {"approach": ["dynamic", "static"]}},
     "data.calibration", "required when quantization.approach is static or tuning.space tries it"),
    ("tuning-bad-strategy", {"tuning.strategy": "random"}, "tuning.strategy",
     "'random' is not one of basic, fastest, fallback"),
    ("tuning-negative-tolerance", {"tuning.tolerance.value": -0.01}, "tuning.tolerance.value",
     "greater than or equal to 0"),
    ("opset-too-low", {"export.opset": 11}, "export.opset", "greater than or equal to 13"),
    ("opset-not-integer", {"export.opset": "eighteen"}, "export.opset", "expected an integer, got 'eighteen'"),
    ("spec-version-2", {"spec_version": 2}, "spec_version", "2 is not supported"),
    ("missing-spec-version", {"spec_version": DROP}, "spec_version", "required key is missing"),
    ("missing-data", {"data": DROP}, "data", "required key is missing"),
    ("missing-evaluation-path", {"data.evaluation.path": DROP}, "data.evaluation.path", "required key is missing"),
    ("static-without-calibration-data", {"quantization.approach": "static"}, "data.calibration",
     "required when quantization.approach is static"),
    ("dynamic-with-format", {"quantization.format": "qdq"}, "quantization.format", "only for approach: static"),
    ("dynamic-with-int8-activations", {"quantization.activation_type": "int8"}, "quantization.activation_type",
     "int8 activations need approach: static"),
    ("dynamic-with-symmetric-activations", {"quantization.symmetric_activations": True},
     "quantization.symmetric_activations", "only for approach: static"),
    ("metric-needs-labels", {"data.evaluation.label_column": None, "evaluation.metric": "accuracy"},
     "data.evaluation.label_column",
     "needs labels"),
    ("latency-longer-than-max-length", {"evaluation.latency.sequence_length": 256},
     "evaluation.latency.sequence_length", "256 exceeds data.max_length 128"),
    ("three-text-columns", {"data.evaluation.text_columns": ["a", "b", "c"]}, "data.evaluation.text_columns",
     "at most 2 items"),
    ("empty-op-types", {"quantization.op_types": []}, "quantization.op_types", "at least 1 item"),
    ("repeated-op-types", {"quantization.op_types": ["MatMul", "Gather", "MatMul"]}, "quantization.op_types",
     "must not repeat"),
    ("duplicate-dynamic-axes", {"export.dynamic_axes": ["batch", "batch"]}, "export.dynamic_axes",
     "axes must not repeat"),
    ("bad-dynamic-axis", {"export.dynamic_axes": ["batch", "time"]}, "export.dynamic_axes.1",
     "'time' is not one of batch, sequence"),
    ("fixed-sequence-with-longest-padding", {"export.dynamic_axes": ["batch"], "data.padding": "longest"},
     "data.padding", "must be max_length when the sequence axis is not dynamic"),
    ("fixed-sequence-length-mismatch", {"export.dynamic_axes": ["batch"], "export.static_sequence_length": 64},
     "export.static_sequence_length", "must equal data.max_length (128)"),
    ("trust-remote-code-maybe", {"model.trust_remote_code": "maybe"}, "model.trust_remote_code",
     "expected true or false, got 'maybe'"),
    ("unknown-metric", {"evaluation.metric": "bleu"}, "evaluation.metric", "'bleu' is not one of accuracy"),
    ("percentile-over-100", {"quantization.calibration.percentile": 100.5}, "quantization.calibration.percentile",
     "less than or equal to 100"),
    ("section-not-a-mapping", {"quantization": "static"}, "quantization", "expected a mapping"),
    ("top-level-list", "- spec_version: 1\n- data: {}\n", "", "expected a mapping at the top level, got list"),
    ("empty-file", "", "", "the file is empty"),
    ("comments-only-file", "# nothing here\n", "", "the file is empty"),
    ("invalid-yaml", "spec_version: 1\ndata:\n  evaluation: [path: val.jsonl\n", "", "invalid YAML: line 4"),
    ("hub-repo-id-without-owner", {"hub.repo_id": "minilm-int8"}, "hub.repo_id",
     "'minilm-int8' is not a Hub repo id; expected owner/name"),
    ("hub-repo-id-double-dash", {"hub.repo_id": "my--org/minilm"}, "hub.repo_id", "is not a Hub repo id"),
    ("hub-repo-id-three-parts", {"hub.repo_id": "a/b/c"}, "hub.repo_id", "is not a Hub repo id"),
    ("hub-missing-repo-id", {"hub.push": True}, "hub.repo_id", "required key is missing"),
    ("hub-unknown-key", {"hub": {"repo_id": "me/m", "privte": True}}, "hub.privte",
     "unknown key; did you mean 'private'?"),
    ("hub-push-not-bool", {"hub": {"repo_id": "me/m", "push": "later"}}, "hub.push",
     "expected true or false, got 'later'"),
    ("hub-empty-revision", {"hub": {"repo_id": "me/m", "revision": ""}}, "hub.revision", "at least 1 character"),
]


@pytest.mark.parametrize(("content", "key_path", "fragment"), [c[1:] for c in BAD_SPECS],
                         ids=[c[0] for c in BAD_SPECS])
def test_malformed_spec_is_reported(tmp_path: Path, content: dict[str, Any] | str, key_path: str,
                                    fragment: str) -> None:
    raw = content if isinstance(content, str) else make_spec(content)
    err = load_error(write_spec(tmp_path, raw, name="bad.yaml"))
    message = str(err)
    assert where(key_path) in message, message
    assert fragment in message, message
    assert any(issue.path == key_path and issue.file == "bad.yaml" for issue in err.issues), err.issues
    assert err.exit_code == 2


def test_there_are_enough_malformed_cases() -> None:
    assert len(BAD_SPECS) >= 25


def test_bad_calibration_method_message_is_exact(tmp_path: Path) -> None:
    path = write_spec(tmp_path, make_spec({"quantization.calibration.method": "entopy"}), name="bad.yaml")
    err = load_error(path)
    assert str(err) == "bad.yaml: quantization.calibration.method: 'entopy' is not one of minmax, entropy, percentile"


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "spec_version: 1\ndata:\n\tevaluation: {}\n", name="bad.yaml")
    err = load_error(path)
    assert len(err.issues) == 1
    assert err.issues[0].message.startswith("invalid YAML: line 3, column 1")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "bad.yaml"
    err = load_error(missing)
    assert "bad.yaml: file not found" in str(err)
    assert len(err.issues) == 1


def test_string_text_columns_become_a_list(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, make_spec({"data.evaluation.text_columns": "sentence"})))
    assert spec.data.evaluation.text_columns == ["sentence"]


# --------------------------------------------------------------------------- 4. many issues at once
def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    raw = make_spec(
        {
            "quantizaton": {},
            "export.opset": "x",
            "quantization.calibration.method": "entopy",
            "quantization.calibration.num_samples": 0,
            "evaluation.metric": "bleu",
        }
    )
    err = load_error(write_spec(tmp_path, raw, name="bad.yaml"))
    paths = [issue.path for issue in err.issues]
    assert len(err.issues) >= 3
    assert len(set(paths)) == len(paths), paths
    assert set(paths) >= {
        "quantizaton",
        "export.opset",
        "quantization.calibration.method",
        "quantization.calibration.num_samples",
        "evaluation.metric",
    }
    message = str(err)
    for path in paths:
        assert where(path) in message
    assert len(message.splitlines()) == len(err.issues)


def test_hub_section_is_validated_and_optional(tmp_path: Path) -> None:
    assert load_spec(write_spec(tmp_path, make_spec())).hub is None
    raw = make_spec({"hub": {"repo_id": "my-org/minilm-spam.int8_v2", "private": True, "revision": "int8",
                             "push": True, "commit_message": "int8", "create_pr": False}})
    hub = load_spec(write_spec(tmp_path, raw)).hub
    assert hub is not None
    assert (hub.repo_id, hub.private, hub.revision, hub.push, hub.commit_message, hub.create_pr) == (
        "my-org/minilm-spam.int8_v2", True, "int8", True, "int8", False)
    defaults = load_spec(write_spec(tmp_path, make_spec({"hub.repo_id": "me/m"}))).hub
    assert (defaults.private, defaults.revision, defaults.push, defaults.create_pr) == (False, None, False, False)
    schema = spec_json_schema()
    assert schema["$defs"]["HubSpec"]["additionalProperties"] is False
    assert schema["$defs"]["HubSpec"]["required"] == ["repo_id"]


# --------------------------------------------------------------------------- 5. schema
def test_json_schema_lists_sections_and_forbids_extra_keys() -> None:
    schema = spec_json_schema()
    assert isinstance(schema, dict)
    assert set(schema["properties"]) >= {
        "spec_version", "model", "export", "quantization", "data", "evaluation", "output"
    }
    assert schema["additionalProperties"] is False
    defs = schema["$defs"]
    assert defs["QuantizationConfig"]["additionalProperties"] is False
    for name in ("ModelSpec", "ExportSpec", "CalibrationSpec", "DatasetSpec", "DataSpec", "EvaluationSpec"):
        assert defs[name]["additionalProperties"] is False, name
    assert "spec_version" in schema["required"] and "data" in schema["required"]
    method = defs["CalibrationSpec"]["properties"]["method"]
    assert set(method["enum"]) == {"minmax", "entropy", "percentile"}


def test_schema_text_is_deterministic_json() -> None:
    text = spec_json_schema_text()
    assert text.endswith("\n")
    assert json.loads(text) == spec_json_schema()


def test_published_schema_is_up_to_date() -> None:
    regenerate = (
        "regenerate it from the repo root with: python -c \"from quantkit.schema import spec_json_schema_text; "
        "open('schema/quantkit-spec.schema.json','w').write(spec_json_schema_text())\""
    )
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing; {regenerate}"
    assert SCHEMA_FILE.read_text(encoding="utf-8") == spec_json_schema_text(), (
        f"{SCHEMA_FILE} is out of date with quantkit.spec; {regenerate}"
    )


# --------------------------------------------------------------------------- 6. immutability, overrides
@pytest.fixture
def spec() -> QuantizationSpec:
    return parse_spec(make_spec({"model.name_or_path": "org/model"}))


def test_spec_is_frozen(spec: QuantizationSpec) -> None:
    with pytest.raises(ValidationError):
        spec.spec_version = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        spec.model.name_or_path = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        spec.quantization.calibration.method = "entropy"  # type: ignore[misc]
    assert spec.model.name_or_path == "org/model"


def test_with_overrides_returns_validated_copy(spec: QuantizationSpec) -> None:
    changed = with_overrides(spec, **{"model.name_or_path": "x", "evaluation.latency.repeats": 5})
    assert isinstance(changed, QuantizationSpec)
    assert changed is not spec
    assert changed.model.name_or_path == "x"
    assert changed.evaluation.latency.repeats == 5
    assert spec.model.name_or_path == "org/model"
    assert spec.evaluation.latency.repeats == 30
    assert changed.data == spec.data


def test_with_overrides_that_break_the_spec_raise(spec: QuantizationSpec) -> None:
    with pytest.raises(SpecError) as info:
        with_overrides(spec, **{"quantization.approach": "static"})
    assert [issue.path for issue in info.value.issues] == ["data.calibration"]
    with pytest.raises(SpecError) as info:
        with_overrides(spec, **{"export.opset": 99})
    assert "export.opset: " in str(info.value)
