"""Benchmarks of stitch-import: each figure next to its floor (``python -m bench``)."""
