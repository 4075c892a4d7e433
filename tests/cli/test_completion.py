"""Shell completion as a user gets it: the script `herdsman completion SHELL` prints,
loaded into a real shell that is asked to complete, against a real daemon for the
instance names; and `status` loads none of what the live commands need."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.cli.live import daemon

# Simulates a TAB at the end of the line: COMP_* as bash sets them, then the
# function the script registered for `herdsman`, whose answer is COMPREPLY.
BASH_TAB = textwrap.dedent(
    """\
    source <(herdsman completion bash)
    tab() {
        COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMP_TYPE=9
        read -ra COMP_WORDS <<< "$1"
        [[ "$1" == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMPREPLY=()
        func=$(complete -p herdsman | sed -E 's/.* -F ([^ ]+) .*/\\1/')
        "$func" herdsman "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%s\\n' "${COMPREPLY[*]}"
    }
    """
)


def bash_tab(cwd: Path, *lines: str) -> list[list[str]]:
    """What bash offers after each line; `herdsman` is this interpreter's."""
    script = BASH_TAB + "".join(f"tab {json.dumps(line)}\n" for line in lines)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    proc = subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return [sorted(out.split()) for out in proc.stdout.splitlines()]


def test_bash_completes_commands_options_and_the_daemons_names(tmp: Path) -> None:
    other = tmp / "elsewhere"
    other.mkdir()
    with daemon(tmp):
        st, restart, logs, signal, config = bash_tab(
            tmp,
            "herdsman st",
            "herdsman restart w",
            "herdsman logs --f",
            "herdsman signal HUP ",
            f"herdsman -c {tmp / 'herdsman.toml'} stop c",
        )
        # The names of the daemon that `-c` names, from another directory.
        (elsewhere,) = bash_tab(other, f"herdsman -c {tmp / 'herdsman.toml'} stop c")
    assert st == ["start", "status", "stop"]
    assert restart == ["web", "web.0", "web.1"]
    assert logs == ["--follow"]
    assert {"crashy", "web", "web.0", "web.1"} <= set(signal)
    assert config == elsewhere == ["crashy"]


def test_without_a_daemon_names_complete_to_nothing_at_once(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text('[services.a]\ncommand = "sleep 1"\n')
    stop, top = bash_tab(tmp, "herdsman stop ", "herdsman top --")
    assert stop == ["--config", "--debug", "--help", "--no-wait", "--timeout", "-c", "-h"]
    assert top == ["--config", "--debug", "--help", "--interval", "--token-file", "--url"]


@pytest.mark.skipif(
    shutil.which("fish") is None, reason="fish is not installed (.ci/run installs it)"
)
def test_fish_completes_too(tmp: Path) -> None:
    with daemon(tmp):
        proc = subprocess.run(
            [
                "fish",
                "--no-config",
                "-c",
                "herdsman completion fish | source; complete -C 'herdsman restart w'",
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp)},
        )
    assert proc.returncode == 0, proc.stderr
    assert sorted(line.split("\t")[0] for line in proc.stdout.splitlines()) == [
        "web",
        "web.0",
        "web.1",
    ]


# zsh's completion widgets cannot run outside an interactive line editor, so the
# script's function is called as the completion system would call it (BUFFER, CURSOR,
# words set), with the one function it hands its answer to, `_describe`, printing
# the candidates instead of offering them.
ZSH_TAB = textwrap.dedent(
    """\
    compdef() { :; }
    source <(herdsman completion zsh)
    _describe() { local list=$2; print -rl -- "${(@P)list}"; print -r -- --; }
    tab() {
        BUFFER=$1; CURSOR=${#BUFFER}; words=(${(z)BUFFER})
        _python_argcomplete
    }
    """
)


@pytest.mark.skipif(
    shutil.which("zsh") is None, reason="zsh is not installed (.ci/run installs it)"
)
def test_zsh_completes_commands_and_the_daemons_names(tmp: Path) -> None:
    script = ZSH_TAB + "tab 'herdsman st'\ntab 'herdsman restart w'\n"
    with daemon(tmp):
        proc = subprocess.run(
            ["zsh", "-f", "-c", script],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp)},
        )
    assert proc.returncode == 0, proc.stderr
    st, restart, _ = proc.stdout.split("--\n")
    # zsh's form is name:description; the names are what a user sees offered.
    assert sorted(line.split(":")[0] for line in st.splitlines()) == ["start", "status", "stop"]
    assert sorted(line.split(":")[0] for line in restart.splitlines()) == [
        "web",
        "web.0",
        "web.1",
    ]


def test_status_loads_none_of_the_live_commands_libraries(tmp: Path) -> None:
    """`status` must stay fast: Textual, argcomplete, asyncio and h11 are for `top`,
    `events` and completion only."""
    probe = textwrap.dedent(
        """\
        import json, sys
        from herdsman.cli.main import main
        code = main(["status"])
        heavy = ("textual", "rich", "argcomplete", "asyncio", "h11")
        print(json.dumps([code, sorted(m for m in heavy if m in sys.modules)]))
        """
    )
    with daemon(tmp):
        proc = subprocess.run(
            [sys.executable, "-c", probe], cwd=tmp, capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 0, proc.stderr
    code, loaded = json.loads(proc.stdout.splitlines()[-1])
    assert code == 0
    assert loaded == []
