"""The inference workload: model resolution, the worker process and its parent-side client."""
