"""Benchmarks, run as modules: python -m dare_jax.bench.<name> --help."""
