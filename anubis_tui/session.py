"""A session: sources, sampler, inference worker and sinks, wired; headless.

Records come from several threads (the sampler, the worker's pipe reader,
the controller). The `Bus` puts them back in time order: it holds each
record for `REORDER_S` (longer than the worker's 50 ms token batches), then
hands it to every sink in order. Live UI, recorder and analysis are sinks
alike; replay feeds the same records from a file.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anubis_tui.config import Config
from anubis_tui.inference.client import WorkerClient
from anubis_tui.inference.models import ModelFacts
from anubis_tui.inference.worker import Spec
from anubis_tui.recording.format import make_header
from anubis_tui.recording.writer import RecordingWriter
from anubis_tui.records import Event, Footer, Record, Sample, Tokens
from anubis_tui.sampler import Sampler
from anubis_tui.sources.base import Source
from anubis_tui.sources.process import ProcessSource
from anubis_tui.sources.registry import discover

REORDER_S = 0.15
Sink = Callable[[Record], None]


class Bus:
    """Time-orders records from many threads and delivers them to sinks from one thread."""

    def __init__(self, t0_ns: int, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.t0 = t0_ns
        self.clock = clock
        self.sinks: list[Sink] = []
        self._heap: list[tuple[int, int, Record]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="anubis-bus", daemon=True)
        self._thread.start()

    def emit(self, rec: Record) -> None:
        t = getattr(rec, "t", 0)
        with self._cond:
            heapq.heappush(self._heap, (t, next(self._seq), rec))
            self._cond.notify()

    def now(self) -> int:
        return self.clock() - self.t0

    def close(self) -> None:
        """Deliver everything still held, in order, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5)

    def _run(self) -> None:
        hold = int(REORDER_S * 1e9)
        while True:
            with self._cond:
                while True:
                    if self._heap and (self._closed or self._heap[0][0] <= self.now() - hold):
                        _, _, rec = heapq.heappop(self._heap)
                        break
                    if self._closed and not self._heap:
                        return
                    wait = (self._heap[0][0] + hold - self.now()) / 1e9 if self._heap else 0.5
                    self._cond.wait(max(0.001, min(wait, 0.5)))
            for sink in list(self.sinks):
                try:
                    sink(rec)
                except Exception as e:  # a sink must not take the others down
                    if not isinstance(rec, Event) or rec.kind != "sink_error":
                        self.emit(
                            Event(self.now(), "sink_error", {"reason": f"{type(e).__name__}: {e}"})
                        )


@dataclass
class Totals:
    """Running totals a Footer reports."""

    samples: int = 0
    tokens_decode: int = 0
    tokens_prompt: int = 0
    requests: int = 0
    events: int = 0

    def __call__(self, rec: Record) -> None:
        if isinstance(rec, Sample):
            self.samples += 1
        elif isinstance(rec, Tokens):
            if rec.phase == "decode":
                self.tokens_decode += rec.count
            else:
                self.tokens_prompt += rec.count
        elif isinstance(rec, Event):
            self.events += 1
            if rec.kind == "request_end":
                self.requests += 1


@dataclass
class Session:
    """Everything a run needs. `start`, then `stop`; sinks get every record in time order."""

    config: Config
    spec: Spec | None = None
    model: ModelFacts | None = None
    sources: list[Source] | None = None
    t0_ns: int = field(default_factory=time.monotonic_ns)
    sinks: list[Sink] = field(default_factory=list)
    log_path: Path | None = None
    discovery_config: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.spec is not None:
            self.spec.t0_ns = self.t0_ns  # worker stamps share the session's zero
        if self.sources is None:
            cfg = dict(self.discovery_config)
            if self.config.cpu_tdp_w:
                cfg["cpu_tdp_w"] = self.config.cpu_tdp_w
            self.sources = discover(config=cfg)
        self.bus = Bus(self.t0_ns)
        self.totals = Totals()
        self.bus.sinks = [self.totals, *self.sinks]
        self.sampler = Sampler(
            self.sources, emit=self.bus.emit, rate_hz=self.config.rate_hz, t0_ns=self.t0_ns
        )
        self.header = make_header(
            self.sampler.channels,
            self.t0_ns,
            model=self.model.plain() if self.model else {},
            config={**self.config.plain(), "system_power": self._system_power()},
        )
        self.worker: WorkerClient | None = None
        self.writer: RecordingWriter | None = None
        self.record_path: str | None = None
        self._stopped = False

    def _system_power(self) -> dict[str, Any]:
        sp = self.sampler.system
        if sp is None:
            return {}
        return {
            "channels": list(sp.channels),
            "tier": sp.tier,
            "method": sp.method,
            "reason": sp.reason,
        }

    @property
    def process_source(self) -> ProcessSource | None:
        return next((s for s in self.sampler.sources if isinstance(s, ProcessSource)), None)

    def add_sink(self, sink: Sink) -> None:
        self.bus.sinks.append(sink)

    def record_to(
        self, out: Any, fsync_s: float | None = None, path: str | None = None
    ) -> RecordingWriter:
        """Start writing every record (from the Header on) to the binary file `out` (at `path`)."""
        self.record_path = path
        w = RecordingWriter(
            out,
            self.header,
            fsync_s=fsync_s or self.config.fsync_interval_s,
            on_error=lambda msg: self.bus.emit(
                Event(self.bus.now(), "recording_error", {"reason": msg})
            ),
        )
        self.writer = w
        self.add_sink(w.submit)
        return w

    def start(self) -> None:
        self.sampler.start()
        if self.spec is not None:
            log = self.log_path or Path(os.devnull)
            self.worker = WorkerClient(self.spec, self.bus.emit, log)
            self.worker.start()
            ps = self.process_source
            if ps is not None:
                ps.attach("worker", self.worker.proc.pid if self.worker.proc else None)

    def restart_worker(
        self, script_prefix: list[str] | None = None, env: dict[str, str] | None = None
    ) -> None:
        """Stop the worker and start it again (plain, or under a launcher such as scalene)."""
        if self.spec is None:
            return
        if self.worker is not None:
            self.worker.stop()
        self.bus.emit(
            Event(
                self.bus.now(), "worker_restart", {"launcher": (script_prefix or ["python"])[2:4]}
            )
        )
        log = self.log_path or Path(os.devnull)
        self.worker = WorkerClient(
            self.spec, self.bus.emit, log, script_prefix=script_prefix, env=env
        )
        self.worker.start()
        ps = self.process_source
        if ps is not None:
            ps.attach("worker", self.worker.proc.pid if self.worker.proc else None)

    def marker(self, label: str = "") -> None:
        self.bus.emit(Event(self.bus.now(), "marker", {"label": label}))

    def stop(self) -> Footer:
        """Stop worker and sampler, drain the bus, write the Footer and close the recording."""
        if self.worker is not None:
            self.worker.stop()
        self.sampler.stop()
        self.bus.close()
        st = self.sampler.stats
        footer = Footer(
            self.bus.now(),
            {
                "clean": True,
                "samples": self.totals.samples,
                "tokens_decode": self.totals.tokens_decode,
                "tokens_prompt": self.totals.tokens_prompt,
                "requests": self.totals.requests,
                "events": self.totals.events,
                "sampler_ticks": st.ticks,
                "sampler_skipped": st.skipped_ticks,
                "sampler_read_errors": st.read_errors,
            },
        )
        if self.writer is not None:
            self.writer.close(footer)
        for s in self.sampler.sources:
            s.close()
        return footer
