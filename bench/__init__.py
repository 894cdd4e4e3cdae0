"""Benchmarks, run by ``make bench``; every figure lands in bench/results.json."""
