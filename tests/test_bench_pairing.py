"""The bench's paired measurement: Parley and the baseline alternate, ABBA."""

from __future__ import annotations

from functools import partial

import pytest

from bench.pairing import alternate, rate_of


def test_parley_and_the_baseline_alternate_so_each_follows_the_other_as_often() -> None:
    calls: list[str] = []

    def parley() -> tuple[int, float]:
        calls.append("P")
        return 64, 0.5

    def baseline(name: str) -> tuple[int, float]:
        calls.append(name)
        return 64, 4.0

    pairs = alternate(parley, [partial(baseline, name) for name in "abcd"])
    assert "".join(calls) == "PabPPcdP"
    assert [rate_of(mine) / rate_of(theirs) for mine, theirs in pairs] == [8.0] * 4


def test_the_best_cpu_configuration_is_bf16_only_where_the_cpu_has_bf16_units(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench import systems

    monkeypatch.setattr(systems, "_cpu_has_bf16_units", lambda: True)
    assert "parley-bf16" in systems.default_systems("cpu")
    assert systems.fastest(list(systems.SYSTEMS), "cpu") == "parley-bf16"

    # Emulated bf16 (an AVX2-only CPU): int8 is the fastest row, and bf16 is left out unless
    # asked for by name.
    monkeypatch.setattr(systems, "_cpu_has_bf16_units", lambda: False)
    assert "parley-bf16" not in systems.default_systems("cpu")
    assert systems.fastest(list(systems.SYSTEMS), "cpu") == "parley-int8"
    assert systems.fastest(["parley-fp32", "parley-bf16"], "cpu") == "parley-fp32"
    assert "parley-bf16" in systems.default_systems("cuda")
    assert systems.fastest(list(systems.SYSTEMS), "cuda") == "parley-fp32"
