"""What a benchmark ran on: the one description every benchmark JSON records, so that numbers from different hosts
are never compared as if they were one machine (hosts of the same kind differ in the CPU features that decide
inference speed)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

#: CPU flags that decide the speed of INT8 / bf16 inference (``/proc/cpuinfo`` spellings); every one is recorded,
#: present or not, plus any ``amx_*`` flag the CPU has.
SPEED_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
               "amx_int8", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_description(cpuinfo: str) -> dict[str, Any]:
    """The CPU model and :data:`SPEED_FLAGS` from the text of ``/proc/cpuinfo`` (its first processor).

    Returns:
        ``{"model": str | None, "flags": {flag: bool}}``.
    """
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    names = list(SPEED_FLAGS) + sorted(flag for flag in flags if flag.startswith("amx") and flag not in SPEED_FLAGS)
    return {"model": model, "flags": {name: name in flags for name in names}}


def machine_info() -> dict[str, Any]:
    """CPUs usable by this process, platform, CPU model and speed flags (``cpu``: None where ``/proc/cpuinfo`` is
    not readable, e.g. not Linux)."""
    try:
        cpu: dict[str, Any] | None = cpu_description(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        cpu = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": usable, "platform": platform.platform(), "processor": platform.processor(), "cpu": cpu}
