"""Per-task SLOs: a small YAML file in, multi-window multi-burn-rate alerts,
recording rules and error-budget series out (docs/slo.md)."""
