"""Configuration: defaults < config file < environment < command-line flags.

The config file is TOML at ``$ANUBIS_CONFIG`` or
``$XDG_CONFIG_HOME/anubis/config.toml``; its top-level keys are the fields
of `Config`, plus a ``[keys]`` table that remaps bindings by id.

Recordings go to ``$XDG_DATA_HOME/anubis/recordings/`` (``~/.local/share``
when the variable is unset, per the XDG Base Directory specification) unless
``record_dir``, ``$ANUBIS_RECORD_DIR``, ``--record`` or ``-o`` say otherwise:
never into the directory anubis happens to be started from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anubis_tui.errors import AnubisError


class ConfigError(AnubisError, ValueError):
    """A bad config value; the message is one line for the user."""


def default_record_dir() -> str:
    """``$XDG_DATA_HOME/anubis/recordings`` (``~/.local/share/anubis/recordings`` by default).

    An unset or relative ``XDG_DATA_HOME`` is ignored, as the XDG Base Directory
    specification says.
    """
    base = os.environ.get("XDG_DATA_HOME", "")
    if not base or not os.path.isabs(base):
        base = str(Path.home() / ".local" / "share")
    return os.path.join(base, "anubis", "recordings")


@dataclass(frozen=True)
class Config:
    """Settings from the config file and ``ANUBIS_*`` variables (`load_config`); CLI flags override
    via `replace`.

    Units in the names: `rate_hz` (sampler Hz), `cpu_tdp_w` (W, for the CPU
    estimate where no meter exists), `fsync_interval_s` (s). `threads` None and
    `flash_attn` None mean "decide from the machine"; `gpu_layers` 0 is CPU-only,
    -1 all layers. `keys` maps binding ids to keys (docs/guide.md).
    """

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
    record_dir: str = field(default_factory=default_record_dir)
    fsync_interval_s: float = 5.0
    keys: dict[str, str] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied, leaving out those that are None (flags the user did not
        give).

        Raises TypeError for a name that is not a field; values are not checked here
        (`load_config` checks what it reads).
        """
        clean = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **clean)

    def plain(self) -> dict[str, Any]:
        """Every field as a dict of plain values (for a recording's Header ``config`` map)."""
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
    """``$ANUBIS_CONFIG``, else ``$XDG_CONFIG_HOME/anubis/config.toml`` (default ``~/.config``); it
    may not exist.
    """
    if p := os.environ.get("ANUBIS_CONFIG"):
        return Path(p)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "anubis" / "config.toml"


MAX_CONFIG_BYTES = 1 << 20


class NotRegularFile(AnubisError, OSError):
    """A path that is a FIFO, a device or a directory where a file was wanted."""

    def __init__(self, path: str | os.PathLike[str], is_dir: bool) -> None:
        super().__init__(f"{path} is {'a directory' if is_dir else 'not a regular file'}")
        self.is_dir = is_dir


def open_regular(path: str | os.PathLike[str]) -> int:
    """A file descriptor of a regular file, opened without blocking (a FIFO never hangs it).

    The descriptor blocks again once checked. NotRegularFile for anything else;
    other OSErrors (missing, denied) as os.open raises them.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(path, stat.S_ISDIR(mode))
    os.set_blocking(fd, True)
    return fd


def read_regular(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes (at most `limit`); OSError with a message for anything else."""
    try:
        fd = open_regular(path)
    except NotRegularFile as e:
        raise OSError(f"{e} ({what} must be a regular file)") from None
    try:
        if os.fstat(fd).st_size > limit:
            raise OSError(f"{path} is larger than {limit} bytes")
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _check(cfg: Config, where: str) -> Config:
    """Every field of the right type and in range, or a ConfigError naming `where`."""
    for f in dataclasses.fields(Config):
        v = getattr(cfg, f.name)
        if v is None:
            if f.name in ("model", "threads", "prompt_file", "cpu_tdp_w", "flash_attn"):
                continue
            raise ConfigError(f"{where}: {f.name} must be set")
        ok = True
        if f.name in ("rate_hz", "fsync_interval_s", "cpu_tdp_w"):
            ok = (
                isinstance(v, int | float)
                and not isinstance(v, bool)
                and math.isfinite(v)
                and (1 <= v <= 1000 if f.name == "rate_hz" else 0 < v <= 1e6)
            )
            hint = "between 1 and 1000 (Hz)" if f.name == "rate_hz" else "a positive number"
        elif f.name in ("threads", "gpu_layers"):  # knobs: the knob's own check
            from anubis_tui.knobspec import check_knob_value

            try:
                ok = isinstance(v, int) and check_knob_value(f.name, v) == v
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
            hint = "a whole number"
        elif f.name in ("n_ctx", "max_tokens"):
            ok = isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 20
            hint = "a positive integer"
        elif f.name == "seed":
            ok = isinstance(v, int) and not isinstance(v, bool) and -1 <= v <= 1 << 31
            hint = "an integer"
        elif f.name == "flash_attn":
            ok = isinstance(v, bool)
            hint = "true or false"
        elif f.name in ("model", "prompt_file", "record_dir"):
            ok = isinstance(v, str) and bool(v) and "\0" not in v
            hint = "a path (a string)"
        elif f.name == "keys":
            ok = isinstance(v, dict) and all(
                isinstance(k, str) and isinstance(x, str) and x for k, x in v.items()
            )
            hint = 'a table of binding id = "key"'
        if not ok:
            raise ConfigError(f"{where}: {f.name} = {v!r} is not {hint}")
    return cfg


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the TOML file at `path` (default `config_path()`), then `env` (default
    os.environ).

    A missing file is no error. Raises ConfigError (one line naming the file or
    variable) for an unreadable or non-regular file (over 1 MiB included), bad
    TOML, an unknown key, or a value of the wrong type or out of range.
    """
    cfg = Config()
    path = path or config_path()
    if os.path.lexists(path):
        try:
            data = tomllib.loads(read_regular(path, MAX_CONFIG_BYTES, "a config file").decode())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
            raise ConfigError(f"config file {path}: {why}") from None
        known = {f.name: f for f in dataclasses.fields(Config)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}")
        cfg = _check(cfg.replace(**data), f"config file {path}")
    environ: Mapping[str, str] = os.environ if env is None else env
    for var, (name, typ) in ENV.items():
        if var in environ:
            try:
                cfg = cfg.replace(**{name: typ(environ[var])})
            except ValueError:
                raise ConfigError(f"{var}={environ[var]!r} is not a valid {typ.__name__}") from None
            cfg = _check(cfg, var)
    return cfg
