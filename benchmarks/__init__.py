"""Performance figures, each a ratio against a baseline measured in the same run.

Run all: `make bench` (or `python -m benchmarks [--quick] [NAME ...]`). Each module exposes
`run(quick: bool = False) -> list[dict]` with rows {benchmark, metric, value, baseline, ratio,
target, pass, unit}; `__main__` runs each module in its own process (libsumo allows one
simulation per process), prints one table and writes JSON.
"""
