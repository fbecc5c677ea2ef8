"""Recording: the msgpack stream format, its writer thread and its tolerant reader."""
