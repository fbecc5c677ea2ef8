"""The bus: time-orders records from many threads and hands them to sinks from one thread.

Records come from several threads (the sampler, the worker's socket reader,
the profiler controller). The `Bus` holds each record for `REORDER_S`
(longer than the worker's records wait for its next socket write), then hands it to every sink
in time order. Live UI, recorder and analysis are sinks alike; replay feeds
the same records from a file. A sink that is not ours (an ``--export``
plugin) runs behind a `plugins.QueuedSink`: its own thread and a bounded queue, so a
slow or stuck one is dropped with an Event and never holds the bus, hence
never the recording.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from anubis_tui.records import Event, Record, Sample, Tokens

# The worker writes to its socket every 200 ms (`Spec.flush_s`), so its records arrive up to
# 200 ms after their stamps; 100 ms more for a loaded machine.
REORDER_S = 0.3
# Records due within one slot are delivered in one wake-up of the bus thread: 5 wake-ups a
# second (each cost 140-200 µs of CPU on the VM and the H200 host at 1,000 tok/s); the app
# draws at 1 fps, and an acknowledgement does not wait for a slot (`flush`).
SLOT_S = 0.2
Sink = Callable[[Record], None]


class Bus:
    """Time-orders records from many threads and delivers them to sinks from one thread."""

    def __init__(self, t0_ns: int, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.t0 = t0_ns
        self.clock = clock
        self.sinks: list[Sink] = []  # replaced, never mutated: the delivery thread reads it
        self._heap: list[tuple[int, int, Record]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._flush_to = 0
        self._delivering = False
        self._thread = threading.Thread(target=self._run, name="anubis-bus", daemon=True)
        self._thread.start()

    def add_sink(self, sink: Sink) -> None:
        """Deliver every record from now on to `sink`, on the bus thread, in time order."""
        with self._cond:
            self.sinks = [*self.sinks, sink]

    def remove_sink(self, sink: Sink) -> None:
        """Stop delivering to `sink` (compared by ==); records already taken may still reach it."""
        with self._cond:
            self.sinks = [s for s in self.sinks if s != sink]

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until every record emitted before this call has been delivered."""
        cut = self.now()
        end = time.monotonic() + timeout
        with self._cond:
            self._flush_to = max(self._flush_to, cut)
            self._cond.notify()
            while time.monotonic() < end and (
                (self._heap and self._heap[0][0] <= cut) or self._delivering
            ):
                self._cond.wait(0.01)
            self._flush_to = 0

    def emit(self, rec: Record) -> None:
        """Queue `rec` by its stamp ``rec.t`` (ns since t0; 0 if it has none), from any thread.

        Records with equal stamps keep the order they were emitted in.
        """
        t = getattr(rec, "t", 0)
        with self._cond:
            heapq.heappush(self._heap, (t, next(self._seq), rec))
            if self._heap[0][2] is rec:  # only a new first record changes when to wake
                self._cond.notify()

    def now(self) -> int:
        """The bus clock: ns since t0 (``clock()``, `time.monotonic_ns` by default, minus t0)."""
        return self.clock() - self.t0

    def close(self) -> None:
        """Deliver everything still held, in order, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5)

    def _run(self) -> None:
        hold = int(REORDER_S * 1e9)
        slot = int(SLOT_S * 1e9)
        while True:
            with self._cond:
                while True:
                    due = self._pop_due(hold)
                    if due:
                        self._delivering = True
                        break
                    if self._closed and not self._heap:
                        return
                    # Sleep to the end of the slot the first record falls due in: the records
                    # of a slot go out together, one wake-up and one lock, not one each.
                    wait = (
                        (-(-(self._heap[0][0] + hold) // slot) * slot - self.now()) / 1e9
                        if self._heap
                        else 0.5
                    )
                    self._cond.wait(max(0.001, min(wait, 0.5)))
            sinks = self.sinks
            for rec in due:
                for sink in sinks:
                    try:
                        sink(rec)
                    except Exception as e:  # a sink must not take the others down
                        if not isinstance(rec, Event) or rec.kind != "sink_error":
                            self.emit(
                                Event(
                                    self.now(),
                                    "sink_error",
                                    {"reason": f"{type(e).__name__}: {e}"},
                                )
                            )
            with self._cond:
                self._delivering = False
                self._cond.notify_all()

    def _pop_due(self, hold: int) -> list[Record]:
        """The records due now, in time order (the caller holds the lock)."""
        heap = self._heap
        if not heap:
            return []
        if self._closed:
            everything = [r for _, _, r in sorted(heap)]
            heap.clear()
            return everything
        cut = max(self._flush_to, self.now() - hold)
        out: list[Record] = []
        while heap and heap[0][0] <= cut:
            out.append(heapq.heappop(heap)[2])
        return out


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
