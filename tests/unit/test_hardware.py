"""Hardware detection and the ISA → quantization-defaults mapping, over fake CPUs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from quantkit.cli import app
from quantkit.hardware import CpuInfo, detect_target, hardware_profile, parse_cpu_info, resolve_quantization
from quantkit.spec import QuantizationConfig
from quantkit.specio import parse_spec, with_overrides

SKYLAKE = "fpu sse sse2 avx avx2 fma avx512f avx512bw avx512vl avx512dq"
CASCADE = SKYLAKE + " avx512_vnni"
SAPPHIRE = CASCADE + " avx512_bf16 amx_tile amx_int8 amx_bf16 avx_vnni"
ALDER = "sse avx avx2 fma avx_vnni"
ZEN2 = "sse avx avx2 fma"
OLD = "sse sse2 sse4_2 avx"


def _cpu(flags: str, arch: str = "x86_64") -> CpuInfo:
    text = f"processor\t: 0\nmodel name\t: Fake CPU\nflags\t\t: {flags}\n"
    model, found = parse_cpu_info(text)
    from quantkit.hardware import INT8_FEATURES

    return CpuInfo(model=model, arch=arch, logical_cores=4, physical_cores=2,
                   features=[f for f in INT8_FEATURES if f in found])


@pytest.mark.parametrize(
    ("flags", "arch", "target", "weight", "activation", "reduce_range", "vnni"),
    [
        (SAPPHIRE, "x86_64", "amx", "int8", "uint8", False, True),
        (CASCADE, "x86_64", "avx512_vnni", "int8", "uint8", False, True),
        (ALDER, "x86_64", "avx_vnni", "int8", "uint8", False, True),
        (SKYLAKE, "x86_64", "avx512", "int8", "uint8", True, False),
        (ZEN2, "x86_64", "avx2", "int8", "uint8", True, False),
        ("fp asimd asimddp i8mm bf16", "aarch64", "arm64", "int8", "int8", False, False),
        (OLD, "x86_64", "generic", "int8", "uint8", True, False),
    ],
)
def test_isa_to_defaults(flags, arch, target, weight, activation, reduce_range, vnni):
    cpu = _cpu(flags, arch)
    assert detect_target(cpu) == target
    assert cpu.has_vnni is vnni or target == "arm64"
    profile = hardware_profile("auto", cpu)
    assert profile.target == target and profile.source == "detected"
    assert profile.defaults["weight_type"] == weight
    assert profile.defaults["activation_type"] == activation
    assert profile.defaults["reduce_range"] is reduce_range and profile.defaults["per_channel"] is True
    assert profile.defaults["format"] == "qdq"
    assert all(profile.reasons[k] for k in profile.defaults)
    static = QuantizationConfig(approach="static")
    resolved, chosen = resolve_quantization(static, profile)
    assert (resolved.weight_type, resolved.activation_type) == (weight, activation)
    dynamic, chosen_dyn = resolve_quantization(QuantizationConfig(approach="dynamic"), profile)
    assert dynamic.activation_type == "uint8" and "activation_type" not in chosen_dyn  # dynamic is always u8
    assert "format" not in chosen_dyn and dynamic.format is None


def test_int8_outlook_warns_where_int8_will_not_pay():
    assert hardware_profile("auto", _cpu(ZEN2)).int8_outlook("static") is not None
    assert "17389" in hardware_profile("auto", _cpu(ZEN2)).int8_outlook("static")
    assert hardware_profile("auto", _cpu(ZEN2)).int8_outlook("dynamic") is None
    assert hardware_profile("auto", _cpu(CASCADE)).int8_outlook("static") is None
    assert "AVX2" in hardware_profile("auto", _cpu(OLD)).int8_outlook("dynamic")


def test_user_settings_win_over_hardware_defaults():
    profile = hardware_profile("auto", _cpu(ZEN2))
    config = QuantizationConfig(approach="static", weight_type="uint8", reduce_range=False)
    resolved, chosen = resolve_quantization(config, profile)
    assert resolved.weight_type == "uint8" and resolved.reduce_range is False
    assert "weight_type" not in chosen and "reduce_range" not in chosen
    assert chosen == {"format": "qdq"}  # the only unset field whose default differs on avx2
    _, unset = resolve_quantization(QuantizationConfig(approach="static"), profile)
    assert unset == {"reduce_range": True, "format": "qdq"}


def test_spec_fields_set_survive_yaml_and_overrides(tmp_path):
    spec = parse_spec({
        "spec_version": 1, "hardware": "avx512_vnni",
        "quantization": {"approach": "static", "weight_type": "uint8"},  # the target says int8
        "data": {"calibration": {"path": "x.jsonl"}, "evaluation": {"path": "x.jsonl"}},
    })
    spec = with_overrides(spec, **{"output.dir": str(tmp_path / "o")})
    assert spec.quantization.model_fields_set >= {"approach", "weight_type"}
    assert "reduce_range" not in spec.quantization.model_fields_set
    resolved, chosen = resolve_quantization(spec.quantization, hardware_profile(spec.hardware, _cpu(ZEN2)))
    assert resolved.weight_type == "uint8"  # set by the user, kept
    assert "weight_type" not in chosen and resolved.reduce_range is False  # VNNI: no reduce_range


def test_explicit_target_and_mismatch():
    profile = hardware_profile("avx512_vnni", _cpu(ZEN2))
    assert profile.source == "spec" and profile.defaults["weight_type"] == "int8"
    assert profile.matches_this_cpu is False
    assert hardware_profile("avx2", _cpu(CASCADE)).matches_this_cpu is True
    with pytest.raises(ValueError, match="unknown hardware target"):
        hardware_profile("sparc", _cpu(ZEN2))


def test_neural_compressor_scheme_is_not_touched():
    config = QuantizationConfig(backend="neural-compressor", approach="static")
    resolved, chosen = resolve_quantization(config, hardware_profile("auto", _cpu(ZEN2)))
    assert chosen == {} and resolved is config


def test_bad_hardware_in_spec_names_the_key():
    from quantkit.errors import SpecError

    with pytest.raises(SpecError, match="hardware"):
        parse_spec({"spec_version": 1, "hardware": "avx1024", "data": {"evaluation": {"path": "x.jsonl"}}})


def test_env_command_prints_features_and_defaults():
    result = CliRunner().invoke(app, ["env", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["target"] == data["detected_target"] and data["source"] == "detected"
    assert set(data["defaults"]) == {"weight_type", "activation_type", "reduce_range", "per_channel", "format"}
    assert data["cpu"]["logical_cores"] >= 1 and "onnxruntime" in data["packages"]
    table = CliRunner().invoke(app, ["env", "--hardware", "avx512_vnni"])
    assert table.exit_code == 0 and "avx512_vnni (spec)" in table.output and "weight_type" in table.output
    bad = CliRunner().invoke(app, ["env", "--hardware", "avx1024"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
