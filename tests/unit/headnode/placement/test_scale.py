"""Decision latency at scale (``make bench``): the targets of bench/placement.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[4] / "bench" / "placement.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_placement", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize(("servers", "decisions"), [(1_000, 200), (10_000, 60)])
def test_decision_latency_meets_its_target(servers: int, decisions: int) -> None:
    bench = load_bench()
    result = bench.bench(servers, decisions)
    assert result["p50_ms"] <= bench.TARGETS_MS[servers], result
