"""Benchmarks: one harness (``python -m bench <suite>``), recorded results in
``bench/results/`` and docs/results.md's Benchmarks block generated from them.

Suites (see ``python -m bench list``): accuracy, digits, overhead, server-cost,
scale, comm, latency. Runs write to ``outputs/bench/`` (never committed); each
suite writes ``bench/results/<suite>.json`` (the raw numbers, the machine and the
load), ``<suite>.md`` (the table) and PNG plots.
"""
