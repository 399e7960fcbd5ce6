"""Benchmarks print tables comparing Parley with plain baselines; see bench/README."""

print("no benchmarks yet")
