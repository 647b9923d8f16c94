"""Prometheus metrics: names, instruments, per-process aggregation, multiprocess collection."""
