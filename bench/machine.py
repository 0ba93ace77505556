"""What a benchmark ran on: every figure in docs/benchmarks.md names its CPU and its bf16 units."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict:
    """CPU model name and the flags that decide which runtime is fastest (AMX, AVX-512-bf16)."""
    info = Path("/proc/cpuinfo")
    text = info.read_text(errors="replace") if info.exists() else ""
    names = (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln)
    return {
        "cpu": next(names, "") or platform.processor(),
        "amx": "amx_bf16" in text,
        "avx512_bf16": "avx512_bf16" in text,
        "cores": os.cpu_count(),
    }
