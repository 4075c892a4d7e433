"""The programs the log tests run under herdsman: `python3 child.py MODE ARGS...`.

Kept free of test imports so it starts fast as a child process; the tests import
`line()` from here to know what every numbered line must look like.

Modes:
  flood N [--mix]      N numbered lines as fast as it can (with --mix, about a third
                       of them on stderr), in big writes, then exit 0
  forever COUNT_FILE   numbered fixed-size lines until the pipe breaks, one write(2) per
                       100 lines; then write "<lines fully written> <pipe size>" to
                       COUNT_FILE and exit
  bursts K SIZE        K writes of SIZE // 21 lines of 21 bytes each, one write(2) apiece,
                       waiting for the pipe to be drained after each
  odd                  lines with bytes that are not text, then a last line without newline
  long                 lines longer than a pipe read, shaped so the reader holds a partial
                       line of a chosen length (waits until the pipe is drained)
  chatty N DONE_FILE   N numbered lines as fast as it can, then creates DONE_FILE and
                       writes "tick K" every 20 ms until killed
  talk N POKE_DIR      N lines on stdout and 3 on stderr, then "ready"; then "poke K" for
                       each file POKE_DIR/K that appears (polled every 10 ms) until killed
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import sys
import termios
import time

PAYLOADS = (
    b"",
    b"plain text",
    b"tab\there and there\t",
    b"caf\xc3\xa9 \xe2\x9c\x93 utf-8",
    b"  leading and trailing spaces  ",
    b"x" * 300,
    b"\xff\xfe not utf-8 \x80",
    b"carriage\rreturn",
    b"nul \x00 byte",
    b"2026-11-23T10:00:00.000000Z out looks like a prefix",
)

FOREVER_LINE = 100  # bytes per `forever` line, newline included


def line(i: int) -> bytes:
    """Numbered line i of `flood` and `chatty` (without its newline)."""
    return b"%07d %s" % (i, PAYLOADS[i % len(PAYLOADS)])


def is_err(i: int) -> bool:
    """Whether `flood --mix` writes line i to stderr."""
    return (i * 7919) % 3 == 0


def forever_line(i: int) -> bytes:
    head = b"%09d " % i
    return head + b"z" * (FOREVER_LINE - len(head) - 1) + b"\n"


def write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    done = 0
    while done < len(data):
        done += os.write(fd, view[done:])
    return done


def wait_drained(fd: int, timeout: float = 10.0) -> None:
    """Until the reader (herdsman) has taken everything in our pipe."""
    pending = array.array("i", [0])
    deadline = time.monotonic() + timeout
    while True:
        fcntl.ioctl(fd, termios.FIONREAD, pending)
        if pending[0] == 0:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"pipe not drained within {timeout}s")
        time.sleep(0.001)


def flood(n: int, mix: bool) -> None:
    for start in range(0, n, 1000):
        numbers = range(start, min(start + 1000, n))
        out = [line(i) + b"\n" for i in numbers if not (mix and is_err(i))]
        err = [line(i) + b"\n" for i in numbers if mix and is_err(i)]
        write_all(1, b"".join(out))
        if err:
            write_all(2, b"".join(err))


def forever(count_file: str) -> None:
    written = 0
    try:
        while True:
            chunk = b"".join(forever_line(i) for i in range(written, written + 100))
            view = memoryview(chunk)
            done = 0
            try:
                while done < len(chunk):
                    done += os.write(1, view[done:])
            finally:
                written += done // FOREVER_LINE
    except OSError as err:
        if err.errno != errno.EPIPE:
            raise
    # As the daemon left it: it grows the pipe of a flood once it sees one.
    pipe_size = fcntl.fcntl(1, 1032)  # F_GETPIPE_SZ
    with open(count_file + ".tmp", "w") as f:
        f.write(f"{written} {pipe_size}\n")
    os.rename(count_file + ".tmp", count_file)


def bursts(k: int, size: int) -> None:
    for b in range(k):
        write_all(1, b"".join(b"burst %03d line %05d\n" % (b, i) for i in range(size // 21)))
        wait_drained(1)


def odd() -> None:
    write_all(1, b"bin \xff\xfe end\n")
    write_all(1, b"cr at the end\r\n")
    write_all(1, b"cr \r in the middle\n")
    write_all(1, b"tab\there\n")
    write_all(1, b"nul\x00byte\n")
    write_all(1, b"\n")
    write_all(1, b"   \n")
    write_all(2, b"err \xc3\x28 bad utf-8\n")
    write_all(1, b"no newline at the end")


def long() -> None:
    k = 64 * 1024
    # 1. one line of 200 KiB in one write
    write_all(1, b"A" * (200 * 1024) + b"\n")
    wait_drained(1)
    # 2. exactly 64 KiB, then (after herdsman has read it all) its newline
    write_all(1, b"B" * k)
    wait_drained(1)
    write_all(1, b"\n")
    wait_drained(1)
    # 3. 60 KiB held, then 10 KiB more and the newline in the next read
    write_all(1, b"C" * (60 * 1024))
    wait_drained(1)
    write_all(1, b"D" * (10 * 1024) + b"\n")
    wait_drained(1)
    # 4. exactly 128 KiB, the newline separately
    write_all(1, b"E" * (2 * k))
    wait_drained(1)
    write_all(1, b"\n")
    write_all(1, b"after the long lines\n")


def chatty(n: int, done_file: str) -> None:
    for start in range(0, n, 100):
        write_all(1, b"".join(line(i) + b"\n" for i in range(start, min(start + 100, n))))
    open(done_file, "w").close()
    tick = 0
    while True:
        write_all(1, b"tick %d\n" % tick)
        tick += 1
        time.sleep(0.02)


def talk(n: int, poke_dir: str) -> None:
    write_all(1, b"".join(b"line %d\n" % i for i in range(n)))
    write_all(2, b"warn 0\nwarn 1\nwarn 2\n")
    write_all(1, b"ready\n")
    k = 1
    while True:
        if os.path.exists(os.path.join(poke_dir, str(k))):
            write_all(1, b"poke %d\n" % k)
            k += 1
        else:
            time.sleep(0.01)


def main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "flood":
        flood(int(args[0]), "--mix" in args)
    elif mode == "forever":
        forever(args[0])
    elif mode == "bursts":
        bursts(int(args[0]), int(args[1]))
    elif mode == "odd":
        odd()
    elif mode == "long":
        long()
    elif mode == "chatty":
        chatty(int(args[0]), args[1])
    elif mode == "talk":
        talk(int(args[0]), args[1])
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
