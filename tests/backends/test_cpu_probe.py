"""The CPU-feature probe reads what it can and never raises, whatever the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from reward_service.backends import cpu
from reward_service.backends.cpu import CpuFeatures, features_from_flags, flags_from_cpuinfo

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu vme sse sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
bogomips\t: 5400.00

processor\t: 1
flags\t\t: fpu vme
"""
ZEN4 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
SKYLAKE = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu avx2 avx512f avx512bw\n"
GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm bf16 i8mm\n"


@pytest.mark.parametrize(
    ("text", "amx", "avx512_bf16"),
    [
        (SAPPHIRE_RAPIDS, True, True),
        (ZEN4, False, True),
        (SKYLAKE, False, False),
        (GRAVITON, False, False),
        ("", False, False),
        ("garbage without colons\n\x00\xff", False, False),
    ],
)
def test_features_from_cpuinfo_text(text: str, amx: bool, avx512_bf16: bool) -> None:
    features = features_from_flags(flags_from_cpuinfo(text), "test")
    assert (features.amx, features.avx512_bf16) == (amx, avx512_bf16)
    assert features.fast_bf16 == (amx or avx512_bf16)


def test_only_the_first_processor_block_is_read() -> None:
    assert "amx_tile" in flags_from_cpuinfo(SAPPHIRE_RAPIDS)
    assert flags_from_cpuinfo(GRAVITON) == {"fp", "asimd", "evtstrm", "bf16", "i8mm"}


def test_amx_needs_the_tile_unit_too() -> None:
    assert not features_from_flags(frozenset({"amx_bf16"}), "test").amx


def test_probe_reads_a_cpuinfo_file(tmp_path: Path, monkeypatch, real_cpuinfo) -> None:
    monkeypatch.setattr(cpu.platform, "system", lambda: "Linux")
    path = tmp_path / "cpuinfo"
    path.write_text(SAPPHIRE_RAPIDS)
    assert cpu.probe(path) == CpuFeatures(amx=True, avx512_bf16=True, source=str(path))


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "binary"])
def test_probe_never_raises_on_unreadable_cpuinfo(
    tmp_path: Path, monkeypatch, without_openvino, real_cpuinfo, kind: str
) -> None:
    monkeypatch.setattr(cpu.platform, "system", lambda: "Linux")
    path = tmp_path / "cpuinfo"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_text("")
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00flags")
    features = cpu.probe(path)
    assert features == CpuFeatures(amx=False, avx512_bf16=False, source="unknown")


def test_probe_off_linux_without_openvino_says_unknown(
    monkeypatch, without_openvino, real_cpuinfo
) -> None:
    monkeypatch.setattr(cpu.platform, "system", lambda: "Darwin")
    features = cpu.probe(Path("/proc/cpuinfo"))
    assert features.source == "unknown"
    assert not features.fast_bf16


def test_probe_off_linux_asks_openvino(monkeypatch, real_cpuinfo) -> None:
    pytest.importorskip("openvino")
    monkeypatch.setattr(cpu.platform, "system", lambda: "Windows")
    features = cpu.probe(Path("/nonexistent"))
    assert features.source == "openvino"
    assert not features.amx


def test_describe_names_the_units() -> None:
    assert "AMX" in CpuFeatures(True, True, "x").describe()
    assert "no bf16 units" in CpuFeatures(False, False, "x").describe()


@pytest.mark.parametrize(
    ("value", "amx", "avx512_bf16"),
    [
        ("amx", True, False),
        ("avx512_bf16", False, True),
        ("AMX, avx512_bf16", True, True),
        ("none", False, False),
    ],
)
def test_the_override_names_a_cpu_class(monkeypatch, value, amx, avx512_bf16) -> None:
    monkeypatch.setenv(cpu.OVERRIDE_ENV, value)
    features = cpu.probe(Path("/nonexistent"))
    assert (features.amx, features.avx512_bf16) == (amx, avx512_bf16)
    assert features.source == cpu.OVERRIDE_ENV


@pytest.mark.parametrize("value", ["", "avx512", "amx,sse"])
def test_a_malformed_override_is_a_clear_error(monkeypatch, value) -> None:
    monkeypatch.setenv(cpu.OVERRIDE_ENV, value)
    with pytest.raises(ValueError, match="REWARD_SERVICE_CPU_FEATURES"):
        cpu.probe(Path("/nonexistent"))
