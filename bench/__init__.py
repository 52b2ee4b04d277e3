"""Benchmarks of the gateway's hop against baselines measured side by side in the same run (issue #6).

Run with `scripts/bench` (or `.venv/bin/python -m bench`). Not part of the test suite: a shared,
noisy machine makes absolute timings meaningless, so every figure is a ratio to, or a difference
from, a baseline measured in the same run, interleaved where the method allows it.
"""
