"""Does this CPU have bf16 matrix units? The answer decides what ``auto`` picks.

bf16 only pays off where the hardware multiplies bf16 natively: Intel AMX tiles (Sapphire
Rapids and later) or the AVX-512 bf16 dot-product instructions (Cooper Lake, AMD Zen 4 and
later). Elsewhere OpenVINO emulates bf16 through fp32 and gains nothing, so ``auto`` keeps ONNX
Runtime. The probe reads the kernel's flag list and, where there is none (macOS, Windows,
containers without /proc), asks OpenVINO itself. It never raises: an unknown CPU is a CPU
without the units.

``REWARD_SERVICE_CPU_FEATURES`` overrides the probe (``amx``, ``avx512_bf16``, both
comma-separated, or ``none``): CI runs the backend tests once per CPU class on whatever machine
it gets, and an operator can keep ``auto`` off bf16 on a host whose flags lie (some
hypervisors pass them through without the state the units need).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
AMX_FLAGS = frozenset({"amx_bf16", "amx_tile"})
AVX512_BF16_FLAG = "avx512_bf16"
OVERRIDE_ENV = "REWARD_SERVICE_CPU_FEATURES"
OVERRIDE_WORDS = {
    "amx": AMX_FLAGS,
    "avx512_bf16": frozenset({AVX512_BF16_FLAG}),
    "none": frozenset(),
}


@dataclass(frozen=True)
class CpuFeatures:
    amx: bool
    avx512_bf16: bool
    source: str  # where the answer came from: "/proc/cpuinfo", "openvino" or "unknown"

    @property
    def fast_bf16(self) -> bool:
        return self.amx or self.avx512_bf16

    def describe(self) -> str:
        units = [name for name, on in (("AMX", self.amx), ("AVX-512-bf16", self.avx512_bf16)) if on]
        return f"{', '.join(units) or 'no bf16 units'} (from {self.source})"


def flags_from_cpuinfo(text: str) -> frozenset[str]:
    """The flags of the first processor block (x86 ``flags``; ARM calls the line ``Features``).

    All cores of one machine share a flag set; reading only the first block keeps this cheap on
    hosts with hundreds of cores.
    """
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def features_from_flags(flags: frozenset[str], source: str) -> CpuFeatures:
    return CpuFeatures(
        amx=flags >= AMX_FLAGS,
        avx512_bf16=AVX512_BF16_FLAG in flags,
        source=source,
    )


def _openvino_features() -> CpuFeatures | None:
    """OpenVINO's own view, where the kernel gives none. None when openvino is absent."""
    try:
        import openvino as ov

        capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no openvino, or a runtime that cannot see the CPU plug-in
        return None
    has_bf16 = "BF16" in capabilities
    # OpenVINO reports one BF16 capability for both kinds of unit; AMX is not told apart.
    return CpuFeatures(amx=False, avx512_bf16=has_bf16, source="openvino")


def features_from_override(value: str) -> CpuFeatures:
    """The CPU class named by :data:`OVERRIDE_ENV`; a word it does not know is an error, since
    a silently ignored typo would test (or serve) the wrong class."""
    words = [w.strip().lower() for w in value.split(",") if w.strip()]
    unknown = [w for w in words if w not in OVERRIDE_WORDS]
    if unknown or not words:
        raise ValueError(
            f"{OVERRIDE_ENV}={value!r}: use 'none' or a comma-separated list of "
            f"{', '.join(w for w in OVERRIDE_WORDS if w != 'none')}"
        )
    flags = frozenset().union(*(OVERRIDE_WORDS[w] for w in words))
    return features_from_flags(flags, OVERRIDE_ENV)


def probe(cpuinfo: Path = CPUINFO) -> CpuFeatures:
    """Features of the CPU this process runs on; only a malformed override raises."""
    if OVERRIDE_ENV in os.environ:
        return features_from_override(os.environ[OVERRIDE_ENV])
    if platform.system() == "Linux":
        try:
            flags = flags_from_cpuinfo(cpuinfo.read_text(errors="replace"))
        except OSError:
            flags = frozenset()
        if flags:
            return features_from_flags(flags, str(cpuinfo))
    return _openvino_features() or CpuFeatures(amx=False, avx512_bf16=False, source="unknown")


@lru_cache(maxsize=1)
def host_features() -> CpuFeatures:
    """The probe, once per process: flags do not change while we run."""
    return probe()
