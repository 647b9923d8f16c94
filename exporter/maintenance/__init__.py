"""Periodic upkeep of the execution log: orphaned attempts and retention."""
