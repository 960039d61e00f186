"""Benchmarks: each writes JSON to bench/results/ with the machine description and the exact command."""
