"""Configuration: defaults < config file < environment < command-line flags.

The config file is TOML at ``$ANUBIS_CONFIG`` or
``$XDG_CONFIG_HOME/anubis/config.toml``; its top-level keys are the fields
of `Config`, plus a ``[keys]`` table that remaps bindings by id.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A bad config value; the message is one line for the user."""


@dataclass(frozen=True)
class Config:
    rate_hz: float = 10.0
    model: str | None = None
    threads: int | None = None
    gpu_layers: int = 0
    n_ctx: int = 1024
    max_tokens: int = 128
    seed: int = 1
    flash_attn: bool | None = None  # None: on where layers are offloaded (measured faster)
    prompt_file: str | None = None
    cpu_tdp_w: float | None = None
    record_dir: str = "recordings"
    fsync_interval_s: float = 5.0
    keys: dict[str, str] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Config:
        clean = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **clean)

    def plain(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ENV: dict[str, tuple[str, type]] = {
    "ANUBIS_RATE_HZ": ("rate_hz", float),
    "ANUBIS_MODEL": ("model", str),
    "ANUBIS_THREADS": ("threads", int),
    "ANUBIS_GPU_LAYERS": ("gpu_layers", int),
    "ANUBIS_CPU_TDP_W": ("cpu_tdp_w", float),
    "ANUBIS_RECORD_DIR": ("record_dir", str),
}


def config_path() -> Path:
    if p := os.environ.get("ANUBIS_CONFIG"):
        return Path(p)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "anubis" / "config.toml"


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    cfg = Config()
    path = path or config_path()
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"config file {path}: {e}") from None
        known = {f.name: f for f in dataclasses.fields(Config)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}")
        cfg = cfg.replace(**data)
    environ: Mapping[str, str] = os.environ if env is None else env
    for var, (name, typ) in ENV.items():
        if var in environ:
            try:
                cfg = cfg.replace(**{name: typ(environ[var])})
            except ValueError:
                raise ConfigError(f"{var}={environ[var]!r} is not a valid {typ.__name__}") from None
    return cfg
