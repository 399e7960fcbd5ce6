"""The bench's paired measurement: Parley and the baseline alternate, ABBA."""

from __future__ import annotations

from functools import partial

from bench.generation import _alternate, _rate


def test_parley_and_the_baseline_alternate_so_each_follows_the_other_as_often() -> None:
    calls: list[str] = []

    def parley() -> tuple[int, float]:
        calls.append("P")
        return 64, 0.5

    def baseline(name: str) -> tuple[int, float]:
        calls.append(name)
        return 64, 4.0

    pairs = _alternate(parley, [partial(baseline, name) for name in "abcd"])
    assert "".join(calls) == "PabPPcdP"
    assert [_rate(mine) / _rate(theirs) for mine, theirs in pairs] == [8.0] * 4
