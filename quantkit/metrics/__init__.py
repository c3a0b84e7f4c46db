"""Metric scripts for ``evaluate.load(path)``, shipped so evaluation works offline."""
