"""Sensor sources: one module per family, discovered through `registry`."""
