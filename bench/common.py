"""What every benchmark shares: timing, the machine, the results file, the shared datasets."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results.json"
WORK = ROOT / ".work"
SHARED_DATA = ROOT.parents[1] / "shared" / "data"


@dataclass
class Figure:
    """One measured figure, compared with a reference measured in the same run."""

    name: str
    value: float
    unit: str
    reference: str  # what the ratio is against
    reference_value: float
    ratio: float  # value / reference_value, unless the benchmark says otherwise
    target: str = ""
    met: bool | None = None
    note: str = ""


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**30
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The fastest of ``repeat`` runs, in seconds (the least disturbed by the machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def p99(samples: list[float]) -> float:
    return (
        statistics.quantiles(samples, n=100, method="inclusive")[98]
        if len(samples) > 1
        else samples[0]
    )


def write(figures: list[Figure]) -> None:
    existing: dict[str, Any] = {}
    if RESULTS.exists():
        existing = json.loads(RESULTS.read_text())
    figs = existing.get("figures", {})
    for f in figures:
        d = asdict(f)
        figs[d.pop("name")] = d
    out = {"machine": machine(), "updated": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "figures": figs}
    RESULTS.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


def shared(*parts: str) -> Path | None:
    path = SHARED_DATA.joinpath(*parts)
    return path if path.exists() else None
