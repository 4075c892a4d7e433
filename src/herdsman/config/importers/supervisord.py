"""`herdsman import supervisord`: a supervisord.conf (and its includes) as herdsman.toml.

Each `[program:x]` becomes a service. Values are expanded as supervisord expands
them (`%(program_name)s`, `%(here)s`, `%(host_node_name)s`, `%(group_name)s`,
`%(process_num)d`, `%%`), except `%(ENV_X)s` of the daemon's environment, which
becomes `${X}` so herdsman reads it when it loads the config. `numprocs` becomes
`replicas` with `{replica}` where every process's values can be written that way,
and one service per process otherwise (a `numprocs_start` offset, `%(process_num)02d`
padding). `priority` becomes `depends_on` "started" on the next lower priority, which
gives supervisord's order: started in ascending, stopped in descending priority.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from herdsman.config.errors import ConfigError
from herdsman.config.importers import Imported
from herdsman.config.importers.supervisord_ini import ConfFiles, Section, read_conf
from herdsman.config.importers.toml_text import (
    Document,
    Table,
    escape_interpolation,
    service_path,
)
from herdsman.core.signals import parse_signal, signal_name

_TRUE = ("yes", "true", "on", "1")
_FALSE = ("no", "false", "off", "0")
_DEFAULT_PRIORITY = 999
_SIZE_SUFFIXES = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}
# Stands in for process_num to find where it lands in a value (see _as_replicas).
_PROCESS_NUM_PROBE = 7301946285
_REPLICA = "{replica}"
# Stands in for `${X}` while a value is expanded and tokenized: only word characters,
# so supervisord's environment tokenizer keeps it in one piece.
_REF = re.compile(r"zzHERDSMANREF(\d+)zz")

_PROGRAM_KEYS = {
    "command", "process_name", "numprocs", "numprocs_start", "priority", "autostart",
    "startsecs", "startretries", "autorestart", "exitcodes", "stopsignal", "stopwaitsecs",
    "stopasgroup", "killasgroup", "user", "redirect_stderr", "stdout_logfile",
    "stdout_logfile_maxbytes", "stdout_logfile_backups", "stdout_capture_maxbytes",
    "stdout_events_enabled", "stdout_syslog", "stderr_logfile", "stderr_logfile_maxbytes",
    "stderr_logfile_backups", "stderr_capture_maxbytes", "stderr_events_enabled",
    "stderr_syslog", "environment", "directory", "umask", "serverurl",
}  # fmt: skip
_NO_EQUIVALENT = {
    "stdout_capture_maxbytes": "herdsman has no capture mode (events carry no output)",
    "stderr_capture_maxbytes": "herdsman has no capture mode (events carry no output)",
    "stdout_events_enabled": "herdsman's event stream (GET /v1/events) carries state changes, not output",
    "stderr_events_enabled": "herdsman's event stream (GET /v1/events) carries state changes, not output",
    "stdout_syslog": "herdsman does not write to syslog; its log files are <log_dir>/<instance>.log",
    "stderr_syslog": "herdsman does not write to syslog; its log files are <log_dir>/<instance>.log",
    "serverurl": "herdsman's children get no supervisor URL (they get HERDSMAN_INSTANCE)",
}
_OTHER_SECTIONS = {
    "unix_http_server": "herdsman's control socket is settings.socket (mode 0600 unless socket_mode)",
    "inet_http_server": "herdsman serves its API over TCP with settings.tcp and a token_file",
    "supervisorctl": "the herdsman command is the client: herdsman status, start, stop, logs",
}
_STDOUT_PATHS = ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")
_STDERR_PATHS = ("/dev/stderr", "/dev/fd/2", "/proc/self/fd/2")


def import_supervisord(path: Path) -> Imported:
    """The supervisord.conf at `path`, with its includes, as herdsman.toml."""
    environ = dict(os.environ)
    host = platform.node()

    def expand_include(text: str, section: Section) -> str:
        fixed = {"here": str(section.file.parent), "host_node_name": host}
        return _expand(text, _Expansions(fixed, {}, environ, None), section, "files")

    return convert(read_conf(path, expand_include), environ, host)


def convert(conf: ConfFiles, environ: Mapping[str, str], host: str) -> Imported:
    """Parsed supervisord sections as herdsman.toml."""
    return _Converter(conf, environ, host).run()


class _Expansions(Mapping[str, object]):
    """What `%(name)s` may name in a value, as supervisord offers it.

    `ENV_X` is a variable the file itself sets (its value), else one of the daemon's
    environment: a `${X}` reference when `refs` collects them, its value now otherwise
    (numbers and flags are needed at import time).
    """

    def __init__(
        self,
        fixed: Mapping[str, object],
        env: Mapping[str, str],
        environ: Mapping[str, str],
        refs: list[str] | None,
    ) -> None:
        self.fixed, self.env, self.environ, self.refs = fixed, env, environ, refs

    def __getitem__(self, name: str) -> object:
        if name in self.fixed:
            return self.fixed[name]
        var = name.removeprefix("ENV_")
        if var == name:
            raise KeyError(name)
        if var in self.env:
            return self.env[var]
        if self.refs is not None:
            if var not in self.refs:
                self.refs.append(var)
            return f"zzHERDSMANREF{self.refs.index(var)}zz"
        if var in self.environ:
            return self.environ[var]
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.fixed)

    def __len__(self) -> int:
        return len(self.fixed)


def _expand(text: str, names: _Expansions, section: Section, key: str) -> str:
    try:
        return text % names
    except KeyError as e:
        known = ", ".join(sorted(names.fixed))
        raise ConfigError(
            [
                f"{section.where}: {key}: %({e.args[0]})s cannot be expanded"
                f" (known here: {known}, and ENV_ of a variable that is set)"
            ]
        ) from None
    except (ValueError, TypeError, OverflowError) as e:
        raise ConfigError(
            [f"{section.where}: {key}: {text!r} is badly formatted ({e}; write %% for a %)"]
        ) from None


def _finish(text: str, refs: list[str]) -> str:
    """An expanded value as herdsman text: `$` escaped, then the `${X}` references."""
    return _REF.sub(lambda m: "${" + refs[int(m.group(1))] + "}", escape_interpolation(text))


def _env_pairs(text: str, section: Section) -> dict[str, str]:
    """supervisord's `KEY="val",KEY2=val` syntax, tokenized as supervisord tokenizes it."""
    lexer = shlex.shlex(text)
    lexer.wordchars += "/.+-():"
    tokens = list(lexer)
    pairs: dict[str, str] = {}
    for start in range(0, len(tokens), 4):
        triple = tokens[start : start + 3]
        if len(triple) != 3 or triple[1] != "=":
            raise ConfigError(
                [
                    f"{section.where}: environment: cannot read {text!r} as KEY=value pairs"
                    ' separated by commas (quote values with spaces or commas: KEY="a, b")'
                ]
            )
        pairs[triple[0]] = triple[2].strip("'\"")
    return pairs


@dataclass
class _Values:
    """A section's values that herdsman needs at import time (numbers, flags, names)."""

    section: Section
    fixed: Mapping[str, object]
    environ: Mapping[str, str]

    def text(self, key: str) -> str | None:
        raw = self.section.options.get(key)
        if raw is None:
            return None
        return _expand(raw, _Expansions(self.fixed, {}, self.environ, None), self.section, key)

    def integer(self, key: str, default: int) -> int:
        return _integer(self.section, key, self.text(key), default)

    def flag(self, key: str, default: bool) -> bool:
        text = self.text(key)
        return default if text is None else _flag(self.section, key, text)


@dataclass
class _Process:
    """One process of a program, its values fully expanded (`${X}` references resolved)."""

    name: str
    command: str
    directory: str | None
    user: str | None
    env: dict[str, str]


@dataclass
class _Service:
    """A service to write, with what decides its `depends_on`."""

    name: str
    table: Table
    order: tuple[int, int]
    order_label: str
    autostart: bool


class _Converter:
    def __init__(self, conf: ConfFiles, environ: Mapping[str, str], host: str) -> None:
        self.conf = conf
        self.environ = environ
        self.host = host
        self.doc = Document()
        self.warnings = list(conf.warnings)
        # Those not about one service, written at the top; the others go with their service.
        self.file_warnings = list(conf.warnings)
        self.services: list[_Service] = []
        self.taken: set[str] = set()
        self.global_env: dict[str, str] = {}
        self.global_env_refs: list[str] = []
        self.default_cwd: str | None = None
        self.default_umask: int | None = None
        self.groups: dict[str, tuple[str, int]] = {}  # program -> (group, its priority)

    def run(self) -> Imported:
        main = self.conf.files[0]
        self.doc.note(f"Imported from {main} by `herdsman import supervisord`.")
        for included in self.conf.files[1:]:
            self.doc.note(f"Included: {included}")
        supervisord = self.conf.get("supervisord")
        if supervisord is not None:
            self._daemon_section(supervisord)
        for section in self.conf.sections:
            if section.name.startswith("group:"):
                self._group(section)
        unset_stopasgroup = False
        for section in self.conf.sections:
            kind, _, name = section.name.partition(":")
            if kind == "program" and name:
                unset_stopasgroup |= "stopasgroup" not in section.options
                self._program(section, name)
            elif kind in ("eventlistener", "fcgi-program") and name:
                self._unsupported(section, kind)
            elif section.name in _OTHER_SECTIONS:
                self.doc.note(f"[{section.name}] not imported: {_OTHER_SECTIONS[section.name]}.")
            elif kind in ("rpcinterface", "ctlplugin"):
                self.doc.note(f"[{section.name}] not imported: herdsman has no plugins.")
            elif kind not in ("supervisord", "group", "include"):
                self._warn(section, "unknown section, not imported")
        if not self.services:
            raise ConfigError([f"{main}: no [program:x] sections found"])
        if unset_stopasgroup:
            self.doc.note(
                "supervisord signals only a program's main process unless stopasgroup and\n"
                "killasgroup are true; herdsman always signals the whole process group, and\n"
                "kills what is left of it when the main process exits."
            )
        self._order_by_priority()
        for warning in self.file_warnings:
            self.doc.note(f"warning: {warning}")
        self.doc.tables = [service.table for service in self.services]
        # One service per process repeats its program's warnings: show each once.
        return Imported(self.doc.render(), list(dict.fromkeys(self.warnings)))

    def _warn(self, section: Section, text: str, table: Table | None = None) -> None:
        self.warnings.append(f"{section.where}: {text}")
        if table is not None:
            table.note(f"warning: {text}")
        else:
            self.file_warnings.append(f"{section.where}: {text}")

    def _static(self, section: Section, key: str, fixed: Mapping[str, object]) -> str | None:
        return _Values(section, fixed, self.environ).text(key)

    # --- [supervisord] and [group:x] -------------------------------------------

    def _daemon_section(self, section: Section) -> None:
        fixed = {"here": str(section.file.parent), "host_node_name": self.host}
        options = dict(section.options)
        raw_env = options.pop("environment", None)
        if raw_env:
            names = _Expansions(fixed, {}, self.environ, self.global_env_refs)
            self.global_env = _env_pairs(_expand(raw_env, names, section, "environment"), section)
            self.doc.note("[supervisord] environment: added to every service's env.")
        directory = options.pop("directory", None)
        nodaemon = _flag(section, "nodaemon", options.pop("nodaemon", "false"))
        if directory is not None and not nodaemon:
            self.default_cwd = escape_interpolation(self._static(section, "directory", fixed) or "")
            self.doc.note(
                "[supervisord] directory: the cwd of every service without a directory\n"
                "(supervisord changes into it when it daemonizes)."
            )
        elif directory is not None:
            self.doc.note(
                f"[supervisord] directory = {directory}: not imported (supervisord changes into\n"
                "it only when it daemonizes, and nodaemon = true)."
            )
        user = options.pop("user", None)
        if user is not None:
            self.doc.note(
                f"[supervisord] user = {user}: supervisord switched to this user itself; run\n"
                "herdsman as that user (e.g. User= in its systemd unit), or set user per service."
            )
        umask = options.pop("umask", None)
        if umask is not None:
            self.default_umask = _octal(section, "umask", umask)
            self.doc.note("[supervisord] umask: the umask of every service without one.")
        childlogdir = options.pop("childlogdir", None)
        if childlogdir is not None:
            self.doc.note(
                f"[supervisord] childlogdir = {childlogdir}: herdsman keeps each instance's\n"
                "log in settings.log_dir (default .herdsman/logs beside this file)."
            )
        if options:
            self.doc.note(
                f"[supervisord] not imported: {', '.join(sorted(options))} (herdsman's own\n"
                "log is <log_dir>/herdsman.log; its settings are in [settings])."
            )

    def _group(self, section: Section) -> None:
        name = section.name.partition(":")[2]
        fixed = {"here": str(section.file.parent), "host_node_name": self.host}
        programs = [p.strip() for p in (self._static(section, "programs", fixed) or "").split(",")]
        priority = _integer(section, "priority", self._static(section, "priority", fixed), 999)
        known = {s.name.partition(":")[2] for s in self.conf.sections}
        for program in filter(None, programs):
            if f"program:{program}" not in {s.name for s in self.conf.sections}:
                hint = "an fcgi-program" if program in known else "no such program"
                raise ConfigError([f"{section.where}: programs names {program!r}: {hint}"])
            if program in self.groups:
                self._warn(section, f"{program!r} is already in [group:{self.groups[program][0]}]")
                continue
            self.groups[program] = (name, priority)

    def _unsupported(self, section: Section, kind: str) -> None:
        command = section.options.get("command", "")
        why = {
            "eventlistener": "herdsman has no event listener protocol; GET /v1/events on the"
            " control socket streams state changes instead",
            "fcgi-program": "herdsman does not open FastCGI sockets for its children",
        }[kind]
        self._warn(section, f"not imported: {why}")
        self.doc.note(f"[{section.name}] command = {command}")

    # --- [program:x] -------------------------------------------------------------

    def _program(self, section: Section, program: str) -> None:
        options = section.options
        for key in options:
            if key not in _PROGRAM_KEYS:
                self._warn(section, f"unknown key {key!r} ignored (supervisord ignores it too)")
        group, group_priority = self.groups.get(program, (program, -1))
        fixed: dict[str, object] = {
            "here": str(section.file.parent),
            "program_name": program,
            "group_name": group,
            "host_node_name": self.host,
        }
        values = _Values(section, fixed, self.environ)
        numprocs = values.integer("numprocs", 1)
        first = values.integer("numprocs_start", 0)
        if numprocs < 1:
            raise ConfigError([f"{section.where}: numprocs: must be at least 1, not {numprocs}"])
        if "command" not in options:
            raise ConfigError([f"{section.where}: has no command"])
        fixed["numprocs"] = numprocs
        priority = values.integer("priority", _DEFAULT_PRIORITY)
        autostart = values.flag("autostart", True)
        processes = [self._process(section, fixed, first + i) for i in range(numprocs)]
        order = (priority if group_priority < 0 else group_priority, priority)
        label = f"priority {priority}"
        if group_priority >= 0:
            label = f"{label} in [group:{group}] of priority {group_priority}"
        if _REPLICA in options["command"] or _REPLICA in options.get("environment", ""):
            self._warn(
                section,
                f"{_REPLICA} in its command or environment: herdsman replaces it with the"
                " replica number",
            )
        replicated = processes[0] if numprocs == 1 else self._replicas(section, fixed, processes)
        if replicated is not None:
            name, table = self._table(section, program, replicated)
            if numprocs > 1:
                names = ", ".join(p.name for p in processes)
                if numprocs > 3:
                    names = f"{processes[0].name} ... {processes[-1].name}"
                table.set(
                    "replicas",
                    numprocs,
                    f"numprocs = {numprocs}: supervisord named them {names};"
                    f" herdsman names them {name}.0 to {name}.{numprocs - 1}",
                )
            self._settings(values, table, autostart)
            self.services.append(_Service(name, table, order, label, autostart))
            return
        for process in processes:
            name, table = self._table(section, process.name, process)
            table.comment(
                f"one of {numprocs} processes (numprocs): herdsman's {{replica}} (0, 1, ...)"
                " cannot write what %(process_num) gives here, so each is a service"
            )
            self._settings(values, table, autostart)
            self.services.append(_Service(name, table, order, label, autostart))

    def _process(self, section: Section, fixed: Mapping[str, object], num: int) -> _Process:
        names = {**fixed, "process_num": num}
        refs = list(self.global_env_refs)
        raw_env = section.options.get("environment", "")
        env_text = _expand(
            raw_env, _Expansions(names, self.global_env, self.environ, refs), section, "environment"
        )
        own_env = _env_pairs(env_text, section) if env_text.strip() else {}
        # Later keys see the program's own variables as ENV_X, as in supervisord.
        expansions = _Expansions(names, {**self.global_env, **own_env}, self.environ, refs)

        def get(key: str) -> str | None:
            raw = section.options.get(key)
            return None if raw is None else _finish(_expand(raw, expansions, section, key), refs)

        command = get("command") or ""
        if not command.strip():
            raise ConfigError([f"{section.where}: command is empty"])
        name_text = _expand(
            section.options.get("process_name", "%(program_name)s"),
            expansions,
            section,
            "process_name",
        )
        env = {key: _finish(val, refs) for key, val in {**self.global_env, **own_env}.items()}
        return _Process(name_text.strip(), command, get("directory"), get("user"), env)

    def _replicas(
        self, section: Section, fixed: Mapping[str, object], processes: list[_Process]
    ) -> _Process | None:
        """The process with `{replica}` for process_num, if that gives every process exactly."""
        try:
            template = self._process(section, fixed, _PROCESS_NUM_PROBE)
        except ConfigError:  # a format the probe cannot take (%(process_num)c): not replicas
            return None
        return _as_replicas(template, processes)

    def _table(self, section: Section, wanted: str, process: _Process) -> tuple[str, Table]:
        name = self._unique(_sanitize(wanted))
        table = Table(service_path(name))
        table.comment(f"[{section.name}] from {section.position}")
        if name != wanted:
            why = "herdsman names use letters, digits, '_' and '-'"
            if _sanitize(wanted) == wanted:
                why = "another service has that name"
            table.comment(f"renamed from {wanted!r}: {why}")
        program = section.name.partition(":")[2]
        if program in self.groups:
            group = self.groups[program][0]
            table.comment(
                f"in supervisord's [group:{group}]; herdsman has no groups"
                " (name several: herdsman start a b, or a glob)"
            )
        table.set("command", process.command)
        cwd = process.directory or self.default_cwd
        if cwd is not None:
            table.set("cwd", cwd)
        if process.env:
            table.set("env", process.env)
        if process.user is not None:
            table.set("user", process.user)
        return name, table

    def _settings(self, values: _Values, table: Table, autostart: bool) -> None:
        section, options = values.section, values.section.options
        umask = values.text("umask")
        if umask is not None:
            table.set("umask", f"{_octal(section, 'umask', umask):04o}")
        elif self.default_umask is not None:
            table.set("umask", f"{self.default_umask:04o}")
        if not autostart:
            table.set("autostart", False)
        restart = self._restart(values, table)
        if "startsecs" in options:
            table.set("start_seconds", f"{values.integer('startsecs', 1)}s")
        retries = values.integer("startretries", 3)
        if restart != "never":
            note = None
            if retries < 1:
                note = f"startretries = {retries}: herdsman allows at least one restart"
            table.set("start_limit", {"burst": max(retries, 1)}, note)
        if "stopsignal" in options:
            table.set("stop_signal", _signal_name(section, values.text("stopsignal") or ""))
        if "stopwaitsecs" in options:
            table.set("stop_timeout", f"{values.integer('stopwaitsecs', 10)}s")
        stop_as_group = values.flag("stopasgroup", False)
        kill_as_group = values.flag("killasgroup", stop_as_group)
        if ("stopasgroup" in options and not stop_as_group) or (
            "killasgroup" in options and not kill_as_group
        ):
            table.note(
                "stopasgroup/killasgroup = false: herdsman signals the whole process group"
                " anyway, and kills what is left of it when the main process exits"
            )
        self._log(values, table)
        for key, why in _NO_EQUIVALENT.items():
            if key in options:
                self._warn(section, f"{key} not imported: {why}", table)

    def _restart(self, values: _Values, table: Table) -> str:
        """Write `restart` from autorestart and exitcodes; the policy written."""
        section = values.section
        text = (values.text("autorestart") or "unexpected").strip().lower()
        codes_text = values.text("exitcodes") or "0"
        try:
            codes = sorted({int(code) for code in codes_text.split(",") if code.strip()})
        except ValueError:
            raise ConfigError(
                [f"{section.where}: exitcodes: {codes_text!r} is not a list of exit codes"]
            ) from None
        if text in _TRUE:
            policy, note = "always", None
        elif text in _FALSE:
            policy, note = "never", None
        elif text == "unexpected":
            policy, note = "on-failure", None
            if "autorestart" not in section.options:
                note = "supervisord's default autorestart = unexpected"
        else:
            raise ConfigError(
                [f"{section.where}: autorestart: {text!r} is not true, false or unexpected"]
            )
        table.set("restart", policy, note)
        if policy != "on-failure":
            return policy
        others = ", ".join(str(code) for code in codes if code != 0)
        if others:
            self._warn(
                section,
                f"exitcodes = {codes_text}: herdsman's on-failure restarts after any"
                f" non-zero exit, so exit {others} restarts it too",
                table,
            )
        if 0 not in codes:
            self._warn(
                section,
                f"exitcodes = {codes_text}: supervisord restarted it after exit 0 too;"
                " herdsman's on-failure does not",
                table,
            )
        return policy

    def _log(self, values: _Values, table: Table) -> None:
        section, options = values.section, values.section.options
        # As written: they only go into comments, and may name %(process_num)s.
        stdout = options.get("stdout_logfile", "auto")
        stderr = options.get("stderr_logfile", "auto")
        redirect = values.flag("redirect_stderr", False)
        for stream, target, console in (
            ("stdout", stdout, _STDOUT_PATHS),
            ("stderr", stderr, _STDERR_PATHS),
        ):
            if stream == "stderr" and redirect:
                continue
            kind = target.strip().lower()
            if kind == "auto":
                continue
            if kind in ("none", "off"):
                self._warn(
                    section,
                    f"{stream}_logfile = {target}: herdsman keeps every line in <log_dir>/<instance>.log anyway",
                    table,
                )
            elif kind == "syslog":
                self._warn(
                    section, f"{stream}_logfile = syslog: herdsman does not write to syslog", table
                )
            elif target.strip() in console:
                table.note(
                    f"{stream}_logfile = {target}: herdsman up prints every line in the foreground as name │ line; herdsman logs shows them"
                )
            else:
                mark = "out" if stream == "stdout" else "err"
                self._warn(
                    section,
                    f"{stream}_logfile = {target}: herdsman writes <log_dir>/<instance>.log instead (its lines marked {mark})",
                    table,
                )
        log: dict[str, object] = {}
        if "stdout_logfile_maxbytes" in options and stdout.strip() not in _STDOUT_PATHS:
            text = values.text("stdout_logfile_maxbytes") or ""
            size = _byte_size(section, "stdout_logfile_maxbytes", text)
            if size == 0:
                table.note(
                    "stdout_logfile_maxbytes = 0: herdsman always rotates; its default is 10MiB"
                )
            else:
                log["max_bytes"] = f"{size // 1024**2}MiB" if size % 1024**2 == 0 else size
        if "stdout_logfile_backups" in options:
            log["backups"] = values.integer("stdout_logfile_backups", 10)
        if log:
            table.set("log", log)

    # --- naming and order ----------------------------------------------------------

    def _unique(self, name: str) -> str:
        candidate, n = name, 2
        while candidate in self.taken:
            candidate, n = f"{name}_{n}", n + 1
        self.taken.add(candidate)
        return candidate

    def _order_by_priority(self) -> None:
        tiers = sorted({s.order for s in self.services})
        if len(tiers) < 2:
            return
        for service in self.services:
            lower = [t for t in tiers if t < service.order]
            for tier in reversed(lower):
                deps = [s for s in self.services if s.order == tier and s.autostart]
                if deps:
                    service.table.set(
                        "depends_on",
                        {dep.name: "started" for dep in deps},
                        f"{service.order_label}: started after, and stopped before, what has"
                        f" {deps[0].order_label}, as supervisord orders them",
                    )
                    break


def _as_replicas(template: _Process, processes: list[_Process]) -> _Process | None:
    """`template` (expanded with the probe for process_num) with `{replica}` in its
    command and env, if that gives every process exactly; else None."""
    probe = str(_PROCESS_NUM_PROBE)
    command = template.command.replace(probe, _REPLICA)
    env = {k.replace(probe, _REPLICA): v.replace(probe, _REPLICA) for k, v in template.env.items()}
    for replica, process in enumerate(processes):
        number = str(replica)
        same = (
            command.replace(_REPLICA, number) == process.command
            and {k.replace(_REPLICA, number): v.replace(_REPLICA, number) for k, v in env.items()}
            == process.env
            and process.directory == processes[0].directory
            and process.user == processes[0].user
        )
        if not same:
            return None
    return _Process(template.name, command, template.directory, template.user, env)


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "program"


def _flag(section: Section, key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError([f"{section.where}: {key}: {text!r} is not a boolean (use true or false)"])


def _integer(section: Section, key: str, text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError([f"{section.where}: {key}: {text!r} is not a whole number"]) from None


def _octal(section: Section, key: str, text: str) -> int:
    try:
        return int(text.strip(), 8)
    except ValueError:
        raise ConfigError([f"{section.where}: {key}: {text!r} is not an octal number"]) from None


def _byte_size(section: Section, key: str, text: str) -> int:
    lowered = text.strip().lower()
    try:
        for suffix, factor in _SIZE_SUFFIXES.items():
            if lowered.endswith(suffix):
                return int(lowered[: -len(suffix)]) * factor
        return int(lowered)
    except ValueError:
        raise ConfigError([f"{section.where}: {key}: {text!r} is not a size (e.g. 50MB)"]) from None


def _signal_name(section: Section, text: str) -> str:
    try:
        return signal_name(parse_signal(text.strip())).removeprefix("SIG")
    except ValueError:
        raise ConfigError([f"{section.where}: stopsignal: {text!r} is not a signal"]) from None
