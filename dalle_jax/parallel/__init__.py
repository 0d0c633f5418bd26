"""Partitioning: device mesh, logical-axis rules, multi-host helpers."""
