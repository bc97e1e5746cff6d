"""Benchmarks of the bridge against the raw aio-pika ceiling and the seed design.

Not tests: pytest never collects these modules (no test_*.py names). Run them with
`.venv/bin/python -m tests.benchmarks.bench [--quick]`; see RESULTS.md.
"""
