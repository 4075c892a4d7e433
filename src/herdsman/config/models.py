"""The config schema: frozen pydantic models whose fields hold final values.

Units are parsed here, once (durations in seconds, sizes in bytes, signals and modes
as ints, commands as argv lists, paths absolute), so nothing downstream parses a
string. Relative paths are resolved against `context["base_dir"]` of the validation
(the config file's directory), or the current directory without one.

Annotations are evaluated as Python reads the classes (no `from __future__ import
annotations`): pydantic would otherwise evaluate each one from its text again.
"""

import os
import re
import shlex
import signal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from herdsman import plugins as lookup
from herdsman.config import paths, units
from herdsman.config.envfile import parse_env_file, read_env_text
from herdsman.config.errors import is_bare_key
from herdsman.config.watch import DEFAULT_DEBOUNCE, check_ignore_pattern, check_watch_pattern
from herdsman.core.graph import Condition
from herdsman.core.plan import RestartMode

ProbeKind = Literal["tcp", "http", "exec", "notify", "log", "plugin"]
# The states a hook can fire on: the instance has just entered one of them.
HookState = Literal["stopped", "starting", "running", "stopping", "restarting", "exited", "failed"]
RestartPolicy = RestartMode

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_SUN_PATH_MAX = 108
_REPLICA = "{replica}"
# Each instance costs pipes, timers and a row in state.json: far more than any host
# runs of one service, far below what would exhaust herdsman's memory before it says so.
MAX_REPLICAS = 10_000


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context
    if isinstance(context, dict) and isinstance(context.get("base_dir"), Path):
        return cast(Path, context["base_dir"])
    return Path.cwd()


def _resolve(path: Path, info: ValidationInfo) -> Path:
    return paths.resolve(path, _base_dir(info))


def _argv(value: object) -> object:
    """A command as an argv list: a string is split like a shell would, without one."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as e:
            raise ValueError(f"cannot be split into arguments: {str(e).lower()}") from None
    elif not isinstance(value, list):
        raise ValueError(f"must be a string or a list of strings, not {units.show_value(value)}")
    if not value:
        raise ValueError("is empty")
    return value


def _strict_bool(value: object) -> bool:
    """`true` or `false`, or that text (what `"${VAR}"` gives): pydantic would also
    take "yes", "on", "1" or 0, which hides a typo or YAML's idea of a boolean."""
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError(f"must be true or false, not {units.show_value(value)}")


Flag = Annotated[bool, BeforeValidator(_strict_bool)]
Duration = Annotated[float, BeforeValidator(units.parse_duration)]
Size = Annotated[int, BeforeValidator(units.parse_size), Field(gt=0)]
SignalNumber = Annotated[int, BeforeValidator(units.parse_signal)]
Mode = Annotated[int, BeforeValidator(units.parse_mode)]
ConfigPath = Annotated[Path, AfterValidator(_resolve)]


# Empty containers come from these, not from dict and list: pydantic reads the
# signature of every default factory, and a builtin's is parsed from its text
# through tokenize (whose regex it compiles first), a sixth of building the models.
def _no_entries() -> dict[Any, Any]:
    return {}


def _no_items() -> list[Any]:
    return []


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Backoff(_Model):
    """Delay before respawning: `initial`, times `factor` per retry, capped at `max`."""

    initial: Duration = 0.1
    max: Duration = 30.0
    factor: float = Field(default=2.0, ge=1)
    jitter: float = Field(default=0.1, ge=0, le=1)

    @field_validator("max")
    @classmethod
    def _max_not_below_initial(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("initial")
        if initial is not None and value < initial:
            raise ValueError(f"must be at least initial ({initial:g}s), not {value:g}s")
        return value


class StartLimit(_Model):
    """More than `burst` starts within `interval` seconds and the instance is failed."""

    burst: int = Field(default=5, ge=1)
    interval: Duration = Field(default=60.0, gt=0)


class LogSettings(_Model):
    """Rotation of a log file (an instance's, or herdsman.log)."""

    max_bytes: Size = 10 * 1024 * 1024
    backups: int = Field(default=5, ge=0)


class _Check(_Model):
    """What readiness probes and health checks share: exactly one way to check."""

    KINDS: ClassVar[tuple[ProbeKind, ...]] = ("tcp", "http", "exec", "plugin")

    tcp: str | None = None
    http: str | None = None
    exec: list[str] | None = None
    # A probe from a plugin, by name, and what it is called with (its keyword
    # arguments): a table of their own, so a typo in `interval` is still an error.
    plugin: str | None = Field(default=None, min_length=1)
    options: dict[str, Any] = Field(default_factory=_no_entries)

    # `{replica}` may stand in a port or URL, so check the text as replica 0 would see it.
    @field_validator("tcp")
    @classmethod
    def _tcp_address(cls, value: str | None) -> str | None:
        if value is not None:
            units.parse_address(value.replace(_REPLICA, "0"))
        return value

    @field_validator("http")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            units.check_url(value.replace(_REPLICA, "0"))
        return value

    @field_validator("exec", mode="before")
    @classmethod
    def _exec_argv(cls, value: object) -> object:
        return None if value is None else _argv(value)

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Self:
        given = self._given()
        if len(given) != 1:
            found = " and ".join(given) if given else "none"
            raise ValueError(f"needs exactly one of {', '.join(self.KINDS)} (found {found})")
        if self.options and self.plugin is None:
            raise ValueError("options only go with plugin")
        return self

    def _given(self) -> list[ProbeKind]:
        return [kind for kind in self.KINDS if getattr(self, kind) not in (None, False)]

    @property
    def kind(self) -> ProbeKind:
        """Which check this is: "tcp", "http", "exec", "notify" or "log"."""
        return self._given()[0]

    def for_replica(self, replica: int) -> Self:
        """This check with `{replica}` replaced in its address, URL or command."""
        number = str(replica)
        return self.model_copy(
            update={
                "tcp": self.tcp and self.tcp.replace(_REPLICA, number),
                "http": self.http and self.http.replace(_REPLICA, number),
                "exec": self.exec and [arg.replace(_REPLICA, number) for arg in self.exec],
                "options": {
                    key: value.replace(_REPLICA, number) if isinstance(value, str) else value
                    for key, value in self.options.items()
                },
            }
        )


class Probe(_Check):
    """Readiness: when a started instance counts as ready for its dependents."""

    KINDS: ClassVar[tuple[ProbeKind, ...]] = ("tcp", "http", "exec", "notify", "log", "plugin")

    notify: Flag = False
    log: str | None = None
    interval: Duration = Field(default=1.0, gt=0)
    timeout: Duration = Field(default=1.0, gt=0)
    initial_delay: Duration = 0.0
    # With notify: the instance must send WATCHDOG=1 at least this often, or it is
    # restarted; it gets WATCHDOG_USEC in its environment (as under systemd).
    watchdog: Duration | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _watchdog_needs_notify(self) -> Self:
        if self.watchdog is not None and not self.notify:
            raise ValueError("watchdog only goes with notify = true")
        return self

    @field_validator("log")
    @classmethod
    def _log_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"{value!r} is not a valid regular expression: {e}") from None
        return value


class HealthCheck(_Check):
    """Liveness: `failure_threshold` failed checks in a row restart the instance."""

    interval: Duration = Field(default=10.0, gt=0)
    timeout: Duration = Field(default=2.0, gt=0)
    failure_threshold: int = Field(default=3, ge=1)
    success_threshold: int = Field(default=1, ge=1)  # passes in a row to be healthy again
    initial_delay: Duration = 0.0


class Hook(_Model):
    """`[[hooks]]` or `[[services.NAME.hooks]]`: something to do when an instance enters
    one of the states in `on`: run a command, POST the event as JSON, or call a plugin.

    Field order matters: `exec` reads `shell` from `info.data`.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("exec", "webhook", "plugin")

    on: list[HookState] = Field(min_length=1)
    shell: Flag = False
    exec: list[str] | None = None
    webhook: str | None = None
    plugin: str | None = Field(default=None, min_length=1)
    options: dict[str, Any] = Field(default_factory=_no_entries)
    timeout: Duration = Field(default=10.0, gt=0)

    @field_validator("on", mode="before")
    @classmethod
    def _one_state(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("exec", mode="before")
    @classmethod
    def _exec_argv(cls, value: object, info: ValidationInfo) -> object:
        if value is None or not info.data.get("shell"):
            return None if value is None else _argv(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a non-empty string when shell = true")
        return ["/bin/sh", "-c", value]

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return None if value is None else units.check_url(value)

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Self:
        given = [kind for kind in self.KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            found = " and ".join(given) if given else "none"
            raise ValueError(f"needs exactly one of {', '.join(self.KINDS)} (found {found})")
        if self.options and self.plugin is None:
            raise ValueError("options only go with plugin")
        if self.shell and self.exec is None:
            raise ValueError("shell only goes with exec")
        return self

    @property
    def kind(self) -> str:
        """ "exec", "webhook" or "plugin"."""
        return next(kind for kind in self.KINDS if getattr(self, kind) is not None)


class KubernetesOptions(_Model):
    """`[services.NAME.kubernetes]`: what `herdsman export kubernetes` cannot guess."""

    image: str  # the container image that has the service's program in it

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str) -> str:
        if not value or any(char.isspace() for char in value):
            raise ValueError(f"must be an image reference such as 'redis:7', not {value!r}")
        return value


class Service(_Model):
    """One `[services.NAME]` table; `replicas` instances run from it.

    Field order matters: validators read earlier fields from `info.data` (`command`
    needs `shell`, `env` needs `env_file`).
    """

    name: str
    shell: Flag = False
    command: list[str]
    cwd: ConfigPath = Field(default=Path("."), validate_default=True)
    env_file: Path | None = None
    env: dict[str, str] = Field(default_factory=_no_entries, validate_default=True)
    user: str | None = Field(default=None, min_length=1)
    group: str | None = Field(default=None, min_length=1)
    umask: Mode | None = None
    autostart: Flag = True
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    restart: RestartPolicy = "always"
    backoff: Backoff = Field(default_factory=Backoff)
    start_limit: StartLimit = Field(default_factory=StartLimit)
    start_seconds: Duration = 1.0
    stop_signal: SignalNumber = int(signal.SIGTERM)
    stop_timeout: Duration = 10.0
    depends_on: dict[str, Condition] = Field(default_factory=_no_entries)
    # systemd's PartOf: restart this service when one of these comes back from a restart.
    restart_with: list[str] = Field(default_factory=_no_items)
    ready: Probe | None = None
    health: HealthCheck | None = None
    memory_limit: Size | None = None
    log: LogSettings = Field(default_factory=LogSettings)
    hooks: list[Hook] = Field(default_factory=_no_items)
    kubernetes: KubernetesOptions | None = None  # read by export only
    # Restart on file changes, under `herdsman up --watch` (see config/watch.py).
    watch: list[Annotated[str, AfterValidator(check_watch_pattern)]] = Field(
        default_factory=_no_items
    )
    watch_ignore: list[Annotated[str, AfterValidator(check_ignore_pattern)]] = Field(
        default_factory=_no_items
    )
    watch_debounce: Duration = DEFAULT_DEBOUNCE

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not is_bare_key(value):
            raise ValueError(f"service name {value!r} may only use letters, digits, '_' and '-'")
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _command_argv(cls, value: object, info: ValidationInfo) -> object:
        if not info.data.get("shell"):
            return _argv(value)
        if not isinstance(value, str):
            raise ValueError(f"must be a string when shell = true, not {units.show_value(value)}")
        if not value.strip():
            raise ValueError("is empty")
        return ["/bin/sh", "-c", value]

    @field_validator("env_file")
    @classmethod
    def _read_env_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = _resolve(value, info)
        try:
            text = read_env_text(path, repr(str(value)))
        except FileNotFoundError:
            raise ValueError(f"{str(value)!r} does not exist (looked for {path})") from None
        except OSError as e:
            raise ValueError(f"cannot read {str(value)!r}: {e.strerror}") from None
        context = info.context if isinstance(info.context, dict) else {}
        variables = parse_env_file(text, str(value), context.get("environ", os.environ))
        # Kept for `env`, validated next, so the file is read once per load.
        context.setdefault("env_files", {})[path] = variables
        return path

    @field_validator("env", mode="before")
    @classmethod
    def _stringify_env(cls, value: object) -> object:
        # TOML and YAML users write `PORT = 8000` and `DEBUG = true`; a child gets text.
        if not isinstance(value, dict):
            return value
        return {key: _env_text(item) for key, item in value.items()}

    @field_validator("env")
    @classmethod
    def _merge_env_file(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for key in value:
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"{key!r} is not a valid environment variable name")
        path = info.data.get("env_file")
        if path is None:
            return value
        context = info.context if isinstance(info.context, dict) else {}
        from_file = context.get("env_files", {}).get(path)
        if from_file is None:  # validated without a context to keep it in
            text = read_env_text(path, repr(str(path)))
            from_file = parse_env_file(text, str(path), context.get("environ", os.environ))
        return {**from_file, **value}

    @field_validator("depends_on", mode="before")
    @classmethod
    def _list_means_started(cls, value: object) -> object:
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return dict.fromkeys(value, "started")
        if isinstance(value, list):
            raise ValueError("must list service names (strings)")
        return value

    @model_validator(mode="after")
    def _restart_with_dependencies(self) -> Self:
        for name in self.restart_with:
            if name not in self.depends_on:
                raise ValueError(f"restart_with names {name!r}, which is not in depends_on")
        return self

    def instance_names(self) -> list[str]:
        """`[name]` for one replica, else `name.0`, `name.1`, ..."""
        if self.replicas == 1:
            return [self.name]
        return [f"{self.name}.{i}" for i in range(self.replicas)]

    # Plain replace, not str.format: commands are full of braces (awk, JSON, shell).
    def argv_for(self, replica: int) -> list[str]:
        """The argv of one instance, with `{replica}` replaced by its number."""
        return [arg.replace(_REPLICA, str(replica)) for arg in self.command]

    def env_for(self, replica: int) -> dict[str, str]:
        """The service's own environment for one instance, `{replica}` replaced."""
        return {key: value.replace(_REPLICA, str(replica)) for key, value in self.env.items()}


def _env_text(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class Settings(_Model):
    """The `[settings]` table: where the daemon keeps its files and how it is reached."""

    state_dir: ConfigPath = Field(default=Path(paths.STATE_DIR), validate_default=True)
    log_dir: ConfigPath = Field(
        default=Path(paths.STATE_DIR, paths.LOG_DIR_NAME), validate_default=True
    )
    socket: ConfigPath = Field(
        default=Path(paths.STATE_DIR, paths.SOCKET_NAME), validate_default=True
    )
    shutdown_timeout: Duration = 30.0
    memory_interval: Duration = Field(default=5.0, gt=0)  # between samples for memory_limit
    token_file: ConfigPath | None = None
    tcp: str | None = None
    socket_mode: Mode = 0o600
    socket_group: str | None = Field(default=None, min_length=1)
    # Per listener (the socket, the TCP port): clients beyond it are turned away, so
    # no client can take the file descriptors that instances need.
    max_connections: int = Field(default=128, ge=1, le=65536)
    log: LogSettings = Field(default_factory=LogSettings)  # defaults for every service's `log`
    log_format: Literal["text", "json"] = "text"  # of the daemon's own herdsman.log
    daemon_log: LogSettings = Field(default_factory=LogSettings)  # rotation of herdsman.log
    # A state_dir that others can write, or that belongs to another user, is refused
    # unless this says it is meant to be shared.
    allow_shared_state_dir: bool = False
    # `package.module:object` references; each is known by its object's name.
    plugins: list[Annotated[str, AfterValidator(lookup.check_reference)]] = Field(
        default_factory=_no_items
    )

    @field_validator("plugins")
    @classmethod
    def _distinct_names(cls, value: list[str]) -> list[str]:
        seen: dict[str, str] = {}
        for reference in value:
            name = lookup.short_name(reference)
            if name in seen and seen[name] != reference:
                raise ValueError(
                    f"{seen[name]!r} and {reference!r} would both be known as {name!r}"
                )
            seen[name] = reference
        return value

    @model_validator(mode="before")
    @classmethod
    def _paths_under_state_dir(cls, data: Any) -> Any:
        # log_dir and socket default to inside state_dir, wherever that was moved.
        if isinstance(data, dict) and isinstance(data.get("state_dir"), str | Path):
            state_dir = Path(data["state_dir"])
            defaults = {
                "log_dir": state_dir / paths.LOG_DIR_NAME,
                "socket": state_dir / paths.SOCKET_NAME,
            }
            data = {**defaults, **data}
        return data

    @field_validator("socket")
    @classmethod
    def _socket_path_fits(cls, value: Path) -> Path:
        length = len(os.fsencode(value))
        if length >= _SUN_PATH_MAX:
            raise ValueError(
                f"{value} is {length} bytes long, and a Unix socket path must be shorter"
                f" than {_SUN_PATH_MAX} bytes (choose a shorter state_dir or socket)"
            )
        return value

    # Checked on tcp, not token_file: the line with tcp is the one that asks for a token.
    @field_validator("tcp")
    @classmethod
    def _tcp_address(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        units.parse_address(value)
        # A token_file that failed its own validation is missing here; say nothing more.
        if "token_file" in info.data and info.data["token_file"] is None:
            raise ValueError("needs token_file too: TCP clients must send its token")
        return value


def _service_body(name: str, body: Any, shared_log: Any) -> Any:
    if not isinstance(body, dict):
        return body
    body = {**body, "name": name}
    if isinstance(shared_log, dict):
        # Only keys LogSettings knows: a mistake in [settings] is reported there, once.
        shared = {k: v for k, v in shared_log.items() if k in LogSettings.model_fields}
        own = body.get("log")
        body["log"] = {**shared, **own} if isinstance(own, dict) else own or shared
    return body


class Config(_Model):
    """A whole config file: where it is, its settings, its services in file order."""

    path: Path
    settings: Settings = Field(default_factory=Settings)
    services: dict[str, Service] = Field(default_factory=_no_entries, validate_default=True)
    hooks: list[Hook] = Field(default_factory=_no_items)  # for every instance of every service

    @model_validator(mode="before")
    @classmethod
    def _fill_in(cls, data: Any) -> Any:
        # Settings must be validated (not defaulted) to see the base_dir of this load;
        # a service's name is its key in the file.
        if not isinstance(data, dict):
            return data
        data = {"settings": {}, **data}
        services = data.get("services")
        settings = data["settings"]
        # `[settings] log = {...}` gives every service's log its defaults; a
        # service's own `log` keys win, key by key.
        shared_log = settings.get("log") if isinstance(settings, dict) else None
        if isinstance(services, dict):
            data["services"] = {
                name: _service_body(name, body, shared_log) for name, body in services.items()
            }
        return data

    @field_validator("services")
    @classmethod
    def _some_services(cls, value: dict[str, Service]) -> dict[str, Service]:
        if not value:
            raise ValueError("no services are defined (add a [services.NAME] table)")
        return value
