"""Grafana dashboards and Prometheus rules for taskiq-exporter, as code.

``python -m dashboards`` regenerates ``dashboards/*.json`` and
``prometheus/rules/taskiq.rules.yml``; thresholds live in ``dashboards.config``.
"""
