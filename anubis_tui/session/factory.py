"""`make_session`: the one builder of a session, for `run`, `record`, `sweep`, `agent`, the app.

Each command used to assemble a `Session` with its own copy of the same
keyword block, clamp the sampling rate itself and attach the ``--export``
sinks itself. They now say what they want and get a configured session,
not yet started; `Session.stop` closes the export sinks it was built with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from anubis_tui.config import Config
from anubis_tui.plugins import PluginError, export_sinks
from anubis_tui.session.core import Session
from anubis_tui.session.sampler import clamp_rate

if TYPE_CHECKING:
    from anubis_tui.inference.attach import AttachSpec
    from anubis_tui.inference.models import ModelFacts
    from anubis_tui.inference.worker import Spec
    from anubis_tui.session.bus import Sink
    from anubis_tui.sources.base import Source


def make_session(
    config: Config,
    spec: Spec | None = None,
    sinks: Sequence[Sink] = (),
    *,
    model: ModelFacts | None = None,
    attach: AttachSpec | None = None,
    rate_hz: float | None = None,
    t0_ns: int | None = None,
    log_path: Path | None = None,
    log_replace: bool = False,
    discovery: dict[str, object] | None = None,
    sources: list[Source] | None = None,
    pyspy_native: bool = False,
    models_dirs: Sequence[Path] = (),
    device_knobs: bool = True,
    exports: Sequence[str] = (),
    on_export_drop: Callable[[str], None] | None = None,
    on_export_error: Callable[[str], None] | None = None,
) -> Session:
    """A configured, unstarted `Session`.

    - `spec` is the inference worker's (None: sensors only); `attach` drives a
      running server instead (inference/attach.py), `model` its GGUF facts.
    - `sinks` get every record from the first (the app's inbox, a writer).
    - `rate_hz` (Hz) overrides the config's sampling rate, clamped to the
      sampler's 1..1000 Hz (`sampler.clamp_rate`).
    - `exports` are ``--export NAME[:OPTIONS]`` plugin sinks
      (`plugins.export_sinks`), each behind its own bounded queue: one that is
      slow or stuck is dropped with a ``sink_dropped`` Event (and
      `on_export_drop` hears the line). One that cannot be made raises
      `PluginError` (one line), unless `on_export_error` is given: it then
      hears the line and the session runs without exports.
    - `log_path` is where the worker's llama.cpp log goes (`log_replace`:
      an existing one is replaced); the rest are `Session`'s own arguments.
    """
    if rate_hz is not None:
        config = config.replace(rate_hz=clamp_rate(rate_hz))
    session = Session(
        config,
        spec=spec,
        model=model,
        sources=sources,
        t0_ns=t0_ns,
        sinks=list(sinks),
        log_path=log_path,
        discovery_config=discovery,
        pyspy_native=pyspy_native,
        log_replace=log_replace,
        models_dirs=list(models_dirs),
        device_knobs=device_knobs,
        attach=attach,
    )
    if exports:
        _add_exports(session, exports, on_export_drop, on_export_error)
    return session


def _add_exports(
    session: Session,
    specs: Sequence[str],
    on_drop: Callable[[str], None] | None,
    on_error: Callable[[str], None] | None,
) -> None:
    def dropped(msg: str) -> None:
        if on_drop is not None:
            on_drop(msg)
        session.emit_event("sink_dropped", reason=msg)

    try:
        made = export_sinks(list(specs), session.header, on_drop=dropped)
    except PluginError as e:
        if on_error is None:
            raise
        on_error(str(e))
        return
    for sink in made:
        session.add_sink(sink)
    session.exports.extend(made)
