"""Readers: a dataset folder in its official layout -> ReidDataset.

Each reader module exposes `read_NAME(root, **options) -> ReidDataset` with paths
(never decoded images), and raises errors.DataNotFoundError naming the
missing sub-folder or file and what the official archive looks like, or
errors.DataError for content that breaks the layout. dare_jax/data/datasets.py
is the one place that maps config.data fields to a reader's options.
"""
