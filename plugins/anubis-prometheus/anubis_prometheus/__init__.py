"""anubis-prometheus: every anubis record becomes a Prometheus metric, served on /metrics.

``anubis record|agent|run --export prometheus[:ADDR:PORT]`` (default
127.0.0.1:9464; binding elsewhere is an explicit choice). Metrics:

* ``anubis_power_watts``, ``anubis_temperature_celsius``, ``anubis_frequency_hertz``:
  one gauge per channel, labelled host, source, scope, label, method;
* ``anubis_energy_joules_total``: each energy counter (the system's too);
* ``anubis_tokens_total{phase}``, ``anubis_decode_tokens_per_second`` and
  ``anubis_joules_per_token``: "now", as the panel shows them (`anubis_tui.analysis.rolling`:
  2 s and 10 s windows; NaN while paused or without tokens, where the panel shows "—");
* ``anubis_throttle{channel, flag}``: 0/1 by canonical flag name;
* ``anubis_profiler_active{profiler}``, ``anubis_profiler_rate_hz``;
* ``anubis_knob{name}`` for numeric knobs, ``anubis_knob_info{name, value}`` for the rest.

A scrape reads the latest values under a lock: the exporter never slows the bus
(anubis runs it behind a bounded queue on its own thread besides). The HTTP
server is bounded: at most `MAX_CONNECTIONS` connections are served at once
(one thread each; more are closed at once) and a connection idle for
`IDLE_S` seconds is closed, so a flood of idle connections costs a fixed
number of threads.
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from anubis_tui.analysis.rolling import Rolling
from anubis_tui.plugins import ExportSink
from anubis_tui.records import (
    ChannelIndex,
    ChannelsAdded,
    Event,
    Header,
    Record,
    Sample,
    Tokens,
    decode_flags,
)

DEFAULT_ADDR = "127.0.0.1"
DEFAULT_PORT = 9464
GAUGES = {
    "power": ("anubis_power_watts", "Power by channel, W"),
    "temperature": ("anubis_temperature_celsius", "Temperature by channel, °C"),
    "frequency": ("anubis_frequency_hertz", "Clock by channel, Hz"),
}
LABELS = ["host", "source", "scope", "label", "method"]
MAX_CONNECTIONS = 8  # served at once; more are closed on accept
IDLE_S = 5.0  # a connection that sends nothing for this long is closed


class _Handler(WSGIRequestHandler):
    timeout = IDLE_S  # socketserver sets it on the connection: idle ones end

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a scrape is not worth a line on the terminal."""


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most `MAX_CONNECTIONS` of them."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64  # listen backlog: a burst waits here, not in a thread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.refused = 0
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An idle or broken connection is closed, not a traceback on stderr."""


def serve(addr: str, port: int, registry: CollectorRegistry) -> tuple[WSGIServer, threading.Thread]:
    """/metrics of `registry` on addr:port (IPv4 or IPv6) from a bounded server; started."""
    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]

    class Server(_BoundedServer):
        address_family = family

    httpd = make_server(
        addr, port, make_wsgi_app(registry), server_class=Server, handler_class=_Handler
    )
    t = threading.Thread(target=httpd.serve_forever, name="prometheus-http", daemon=True)
    t.start()
    return httpd, t


def parse_address(options: str) -> tuple[str, int]:
    """``""`` → 127.0.0.1:9464; ``PORT``; ``ADDR:PORT`` (an IPv6 address in brackets)."""
    if not options:
        return DEFAULT_ADDR, DEFAULT_PORT
    addr, sep, port = options.rpartition(":")
    if not sep:
        addr, port = DEFAULT_ADDR, options
    addr = addr.strip("[]") or DEFAULT_ADDR
    try:
        n = int(port)
    except ValueError:
        raise ValueError(f"{port!r} is not a port") from None
    if not 0 < n < 65536:
        raise ValueError(f"port {n} is out of range")
    return addr, n


class PrometheusSink(ExportSink):
    def __init__(self, options: str, header: Header) -> None:
        super().__init__(options, header)
        self.addr, self.port = parse_address(options)
        self.lock = threading.Lock()
        self.host = str(header.host.get("hostname", ""))
        self.index = ChannelIndex()  # the channels in Sample order, as every sink keeps them
        self.latest: list[float | None] = []  # the last finite reading of each, SI units
        self.tokens = {"decode": 0, "prompt": 0}
        self.rolling = Rolling()  # tok/s and J/token "now", the panel's definitions
        self.rolling.consume(header)
        self.t = 0
        self.profiler: str | None = None
        self.profiler_rate: float | None = None
        self.knobs: dict[str, Any] = {}
        self._added(self.index.consume(header))
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self.server, self.thread = serve(self.addr, self.port, self.registry)

    def _added(self, positions: range) -> None:
        self.latest += [None] * len(positions)

    def __call__(self, rec: Record) -> None:
        with self.lock:
            self.rolling.consume(rec)
            t = getattr(rec, "t", None)
            if isinstance(t, int):
                self.t = max(self.t, t)
            if isinstance(rec, ChannelsAdded):
                self._added(self.index.consume(rec))
            elif isinstance(rec, Sample):
                for i in range(min(len(rec.values), len(self.latest))):
                    v = self.index.value(rec.values, i)
                    if v is not None:
                        self.latest[i] = v
            elif isinstance(rec, Tokens):
                self.tokens[rec.phase] = self.tokens.get(rec.phase, 0) + rec.count
            elif isinstance(rec, Event):
                self._event(rec)

    def _event(self, e: Event) -> None:
        p = e.payload
        if e.kind in ("profiler_on", "profiler_rate"):
            self.profiler = str(p.get("profiler") or "")
            rate = p.get("rate_hz")
            self.profiler_rate = float(rate) if isinstance(rate, int | float) else None
        elif e.kind == "profiler_off":
            self.profiler, self.profiler_rate = None, None
        elif e.kind == "knobs" and isinstance(p.get("values"), dict):
            self.knobs = dict(p["values"])
        elif e.kind == "knob" and isinstance(p.get("name"), str):
            self.knobs[p["name"]] = p.get("value")

    def decode_tps(self) -> float:
        """tok/s now (NaN while paused or without tokens: the panel's "—")."""
        v = self.rolling.decode_tps()
        return math.nan if v is None else v

    def j_per_token(self) -> float:
        v = self.rolling.j_per_token()
        return math.nan if v is None else v

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Collector(Collector):
    def __init__(self, sink: PrometheusSink) -> None:
        self.s = sink

    def collect(self) -> Iterator[Metric]:
        s = self.s
        with s.lock:
            chans = list(zip(s.index.channels, s.latest, strict=True))
            tokens = dict(s.tokens)
            tps = s.decode_tps()
            jpt = s.j_per_token()
            prof, rate, knobs = s.profiler, s.profiler_rate, dict(s.knobs)
        fams = {k: GaugeMetricFamily(n, h, labels=LABELS) for k, (n, h) in GAUGES.items()}
        energy = CounterMetricFamily("anubis_energy_joules", "Energy counters, J", labels=LABELS)
        throttle = GaugeMetricFamily(
            "anubis_throttle", "Throttle flags, 1 when active", labels=["host", "channel", "flag"]
        )
        for c, v in chans:
            if v is None or c.meta.get("is_limit"):
                continue
            labels = [s.host, c.source, c.scope, c.label, c.method]
            if c.kind in fams:
                fams[c.kind].add_metric(labels, v)
            elif c.kind == "energy":
                energy.add_metric(labels, v)
            elif c.kind == "throttle":
                flags_on, _ = decode_flags(c, int(v))
                for flag in dict.fromkeys(c.meta.get("flags", {}).values()):
                    throttle.add_metric([s.host, c.id, flag], 1.0 if flag in flags_on else 0.0)
        yield from fams.values()
        yield energy
        yield throttle
        tok = CounterMetricFamily("anubis_tokens", "Tokens processed", labels=["host", "phase"])
        for phase, n in tokens.items():
            tok.add_metric([s.host, phase], n)
        yield tok
        g = GaugeMetricFamily(
            "anubis_decode_tokens_per_second", "Decode tok/s over 2 s", labels=["host"]
        )
        g.add_metric([s.host], tps)
        yield g
        j = GaugeMetricFamily(
            "anubis_joules_per_token", "System J per decode token over 10 s", labels=["host"]
        )
        j.add_metric([s.host], jpt)
        yield j
        active = GaugeMetricFamily(
            "anubis_profiler_active", "1 while a profiler runs", labels=["host", "profiler"]
        )
        active.add_metric([s.host, prof or "none"], 1.0 if prof else 0.0)
        yield active
        r = GaugeMetricFamily("anubis_profiler_rate_hz", "Profiler rate", labels=["host"])
        r.add_metric([s.host], rate or 0.0)
        yield r
        num = GaugeMetricFamily("anubis_knob", "Numeric knob values", labels=["host", "name"])
        info = GaugeMetricFamily(
            "anubis_knob_info", "Knob values", labels=["host", "name", "value"]
        )
        for name, value in knobs.items():
            if isinstance(value, bool):
                num.add_metric([s.host, name], 1.0 if value else 0.0)
            elif isinstance(value, int | float):
                num.add_metric([s.host, name], float(value))
            elif value is not None:
                info.add_metric([s.host, name, str(value)[:200]], 1.0)
        yield num
        yield info
