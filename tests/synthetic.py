"""Synthetic recordings with known energy and tokens, written through the real writer.

These are test inputs with hand-computable answers, never presented as real
measurements (real recordings live in recordings/).
"""

from __future__ import annotations

import random
from pathlib import Path

from anubis_tui.recording.format import make_header
from anubis_tui.recording.writer import RecordingWriter, open_output
from anubis_tui.records import Channel, Event, Footer, Sample, Tokens
from anubis_tui.sources.nvml import NVML_FLAGS

S = 1_000_000_000
CHANNELS = [
    Channel(
        id="gpu0.energy",
        label="GPU energy",
        source="nvml:0",
        kind="energy",
        unit="J",
        scope="gpu",
        method="counter",
        update_period_s=0.1,
    ),
    Channel(
        id="gpu0.temp",
        label="GPU temp",
        source="nvml:0",
        kind="temperature",
        unit="°C",
        scope="gpu",
        method="instant",
        update_period_s=0.25,
    ),
    Channel(
        id="gpu0.throttle",
        label="GPU reasons",
        source="nvml:0",
        kind="throttle",
        unit="flags",
        scope="gpu",
        method="instant",
        update_period_s=0.25,
        meta={"flags": dict(NVML_FLAGS)},
    ),
    Channel(
        id="system.power",
        label="system power",
        source="anubis",
        kind="power",
        unit="W",
        scope="components",
        method="derived",
        update_period_s=0.0,
    ),
    Channel(
        id="system.energy",
        label="system energy",
        source="anubis",
        kind="energy",
        unit="J",
        scope="components",
        method="counter",
        update_period_s=0.0,
        meta={"integration": "counters"},
    ),
]


def write(
    path: Path,
    phases: list[tuple[float, float, float, str | None, float | None]],
    rate_hz: float = 10.0,
    footer: bool = True,
    force: bool = False,
    cap_w: float = 200.0,
    initial_knobs: dict | None = None,
    jitter: float = 0.0,
    seed: int = 0,
) -> dict:
    """Phases of (seconds, watts, decode tok/s, profiler, rate): constant power and token rate.

    Token rates must be multiples of 20 (whole tokens per 50 ms batch).
    A profiler of the form ``knob:NAME=VALUE`` is a knob change instead (an int
    VALUE where it is one); `initial_knobs` is the ``knobs`` Event at the start.
    `jitter` makes each sample's power vary uniformly by ±jitter (a fraction) around
    the phase's watts (seeded), the energy following it exactly.

    Requests are 1 s long, decode tokens come in 50 ms batches, energy is the
    integral of power (exact, piecewise constant). From `cap_w` watts on, the GPU
    reports power_cap (as the H200 did at its 700 W limit). Returns the expected totals.
    """
    out = open_output(str(path), force=force)
    w = RecordingWriter(out, make_header(CHANNELS, 0, {"name": "synthetic"}, {}))
    t = 0
    energy = 0.0
    tokens = 0
    req = 0
    dt = int(S / rate_hz)
    rng = random.Random(seed)
    knobs = dict(initial_knobs or {})
    if initial_knobs is not None:
        w.submit(Event(0, "knobs", {"values": dict(knobs), "state": {}}))
    for secs, watts, tps, prof, rate in phases:
        if prof is not None and prof.startswith("knob:"):
            name, _, text = prof[5:].partition("=")
            value: object = int(text) if text.lstrip("-").isdigit() else text
            w.submit(Event(t, "knob", {"name": name, "value": value, "previous": knobs.get(name)}))
            knobs[name] = value
        elif prof is not None:
            w.submit(Event(t, "profiler_on", {"profiler": prof, "rate_hz": rate}))
        elif t > 0:
            w.submit(Event(t, "profiler_off", {}))
        end = t + int(secs * S)
        while t < end:
            if (t % S) == 0:
                req += 1
                w.submit(Event(t, "request_start", {"request": req}))
                n_req = 0
            energy_t = energy
            p_now = watts * (1 + rng.uniform(-jitter, jitter)) if jitter else watts
            w.submit(
                Sample(
                    t,
                    [
                        energy_t,
                        60.0 if watts < 200 else 70.0,
                        4 if watts >= cap_w else 0,
                        p_now,
                        energy_t,
                    ],
                )
            )
            # 50 ms batches of decode tokens
            for k in range(int(dt / (S // 20))):
                bt = t + k * (S // 20) + S // 40  # mid-batch stamps: never on a boundary
                n = int(tps / 20)
                if n:
                    w.submit(Tokens(bt, n, "decode", req, bt - S // 40 + 1))
                    tokens += n
                    n_req += n
            energy += p_now * dt / S
            t += dt
            if (t % S) == 0:
                w.submit(
                    Event(
                        t - 1,
                        "request_end",
                        {
                            "request": req,
                            "generated": n_req,
                            "prompt_tokens": 10,
                            "ttft_ns": 10_000_000,
                            "decode_ns": int((n_req - 1) / tps * S) if tps else 0,
                        },
                    )
                )
    w.submit(Sample(t, [energy, 60.0, 0, phases[-1][1], energy]))
    if footer:
        w.close(Footer(t, {"clean": True}))
    else:
        w.queue.put(None)
        w._thread.join()
        w.out.flush()
        w.out.close()
    return {"energy_j": energy, "tokens": tokens, "duration_s": t / S}
