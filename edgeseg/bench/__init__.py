"""Latency measurement: statistics, local timing harness, device runs, latency model."""
