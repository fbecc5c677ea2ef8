"""Analysis: rolling windows, segments and profiler overhead against baseline."""
