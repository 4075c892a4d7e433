"""The importer against supervisord's own parser (supervisor from PyPI, a dev dependency):
for each process supervisord would run, herdsman runs the same argv with the same
environment and working directory."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from supervisor.datatypes import dict_of_key_value_pairs
from supervisor.options import ServerOptions

from herdsman.config import ConfigError
from herdsman.config.importers.supervisord import _env_pairs
from herdsman.config.importers.supervisord_ini import Section
from tests.importers.helpers import FIXTURES, supervisord, write_and_load

ENVIRON = {"API_TOKEN": "s3cret", "HOME": "/home/me", "PATH": "/usr/bin:/bin"}


def supervisord_processes(conf: Path) -> list[tuple[list[str], dict[str, str], str | None]]:
    options = ServerOptions()
    options.configfile = str(conf)
    options.here = str(conf.parent)
    options.environ_expansions = {f"ENV_{k}": v for k, v in ENVIRON.items()}
    section = options.read_config(str(conf))
    found = []
    for group in sorted(section.process_group_configs):
        for process in sorted(group.process_configs):
            found.append((shlex.split(process.command), process.environment, process.directory))
    return found


def herdsman_processes(conf: Path, tmp: Path) -> list[tuple[list[str], dict[str, str], str | None]]:
    _, result = supervisord(conf)
    config = write_and_load(result, tmp, ENVIRON)
    found = []
    for service in config.services.values():
        for replica in range(service.replicas):
            cwd = str(service.cwd) if service.cwd != tmp else None
            found.append((service.argv_for(replica), service.env_for(replica), cwd))
    return found


def runnable_here(source: Path, tmp: Path) -> Path:
    """A copy of a conf.d-style file that supervisord accepts on this machine: with the
    [supervisord] section it requires, without users and log directories it checks."""
    conf = tmp / "conf" / source.name
    conf.parent.mkdir()
    lines = [
        line
        for line in source.read_text().splitlines()
        if not line.startswith(("user=", "stdout_logfile="))
    ]
    conf.write_text("\n".join(["[supervisord]", *lines, ""]))
    return conf


@pytest.mark.parametrize("name", ["docker", "includes", "workers", "tricky"])
def test_same_processes_as_supervisord(
    name: str, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in ENVIRON.items():
        monkeypatch.setenv(key, value)
    if name == "tricky":
        conf = tmp / "conf" / "supervisord.conf"
        conf.parent.mkdir()
        conf.write_text(TRICKY)
    else:
        conf = FIXTURES / name / "supervisord.conf"
        if "[supervisord]" not in conf.read_text():
            conf = runnable_here(conf, tmp)
    expected = supervisord_processes(conf)
    # Order: herdsman lists services in file order, supervisord by priority; compare sets.
    got = herdsman_processes(conf, tmp)
    assert sorted(map(repr, got)) == sorted(map(repr, expected))


TRICKY = """\
[supervisord]
environment = SHARED="one, two",EMPTY=""

[program:quotes]
command = /bin/echo "a b" 'c d' e\\ f %% 100%% ; trailing comment
    --continued "semi;colon" #not-a-comment
environment = A=1,B="x=y",C='q',PATHS=/a/b:/c

[program:pool]
process_name = pool-%(process_num)d
numprocs = 3
command = /bin/worker --id %(process_num)d --of %(numprocs)d --name %(program_name)s
environment = SLOT="%(process_num)d",FROM_ENV="%(ENV_HOME)s"
directory = /tmp

[program:padded]
process_name = padded_%(process_num)02d
numprocs = 2
numprocs_start = 9
command = /bin/worker --port 80%(process_num)02d
"""


@pytest.mark.parametrize(
    "text",
    [
        'A=1,B="two words",C=3',
        "KEY=val",
        "PATH=/usr/local/bin:/usr/bin,HOME=/root",
        "A='single, quoted',B=\"double, quoted\"",
        'EMPTY=""',
        "X=-Dfoo.bar+baz(1)",
        "",
    ],
)
def test_environment_syntax_as_supervisord_reads_it(text: str) -> None:
    section = Section("program:x", Path("/etc/supervisord.conf"), 1, {})
    assert _env_pairs(text, section) == dict_of_key_value_pairs(text)


@pytest.mark.parametrize("text", ["A=1,B", "A", "A=1,=2", "A=a@b"])
def test_environment_supervisord_rejects_is_an_error(text: str) -> None:
    section = Section("program:x", Path("/etc/supervisord.conf"), 1, {})
    with pytest.raises(ValueError, match="Unexpected end of key/value pairs"):
        dict_of_key_value_pairs(text)
    with pytest.raises(ConfigError, match=r"/etc/supervisord.conf:1: \[program:x\]: environment"):
        _env_pairs(text, section)
