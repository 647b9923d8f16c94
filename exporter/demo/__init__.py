"""A demo workload: ten typical task types with realistic durations and failures."""
