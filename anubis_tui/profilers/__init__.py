"""Profilers: py-spy, scalene and static analysis of the model."""
