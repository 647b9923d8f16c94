"""A demo workload: the seed's ten task types with realistic durations and failures."""
