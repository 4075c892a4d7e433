"""Signals by name: the one place that reads a signal from text and names one.

The config (`stop_signal`), the importer (`stopsignal`), the CLI (`herdsman signal`)
and the daemon (the API's `signal` field) all read signals here, so `hup`, `SIGHUP`
and `1` mean the same everywhere; everything that prints a signal names it here.
"""

from __future__ import annotations

import functools
import signal

HINT = "use e.g. 'TERM', 'INT', 'HUP' or a number"


# Each number named once: an exit's message names its signal on the way to its
# respawn, and the enum's lookup runs five Python calls.
@functools.cache
def signal_name(sig: int) -> str:
    """`SIGUSR1` for 10; `SIGRTMIN+3` for a real-time signal; `signal 99` for no signal."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        pass
    if signal.SIGRTMIN < sig <= signal.SIGRTMAX:
        return f"SIGRTMIN+{sig - signal.SIGRTMIN}"
    return f"signal {sig}"


def parse_signal(value: object) -> int:
    """A signal number from `"TERM"`, `"SIGTERM"`, `"term"`, `"15"` or `15`; ValueError
    with one sentence otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be a signal name like 'TERM' or a number, not {value!r}")
    if isinstance(value, str) and not value.strip().isdigit():
        name = value.strip().upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        try:
            return int(signal.Signals[name])
        except KeyError:
            raise ValueError(f"{value!r} is not a signal name ({HINT})") from None
    number = int(value)
    # Every number the kernel takes, real-time signals (no names) included.
    if not 1 <= number < signal.NSIG:
        raise ValueError(f"{number} is not a signal number on this system")
    return number
