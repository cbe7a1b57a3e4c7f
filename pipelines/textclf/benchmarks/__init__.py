"""Benchmarks (``make bench-*``): each writes a JSON file of measured numbers."""
