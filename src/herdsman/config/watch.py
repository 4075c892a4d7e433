"""`watch` and `watch_ignore` patterns, compiled for the daemon's watcher.

Both follow .gitignore's rules, as pathspec implements them (`*` within a name, `**`
across directories, `[abc]`, `!` to take back what an earlier pattern matched, a
trailing `/` for directories, and a directory matching everything under it), with
one difference for `watch`: its patterns are always relative to the service's cwd
(`app.py` is that file, not any `app.py` in the tree). `watch_ignore` patterns
without a `/` match at any depth (`__pycache__`, `*.pyc`), as in a .gitignore.

The result is regular expressions as text, so the daemon needs only `re`.
"""

from __future__ import annotations

import os
from pathlib import Path

from herdsman.core.plan import WatchPlan

# Version control, caches, dependencies, and what editors write beside a file while
# saving it: vim's swap files and its `4913` probe, emacs' lock and autosave files,
# backups ending in ~.
DEFAULT_IGNORE = (
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    "node_modules/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.swp",
    "*.swx",
    "4913",
    "*~",
    ".#*",
    "\\#*#",
)
DEFAULT_DEBOUNCE = 0.3  # seconds of quiet after the last change before the restart
_GLOB = frozenset("*?[\\")


def pattern_regex(pattern: str, *, anchored: bool) -> tuple[str, bool]:
    """(regular expression, include) for one pattern; ValueError if it is not one."""
    text = pattern
    negated = text.startswith("!")
    if negated:
        text = text[1:]
    if anchored and not text.startswith("/"):
        text = "/" + text.removeprefix("./")
    # Imported here: every config validation imports this module, few have patterns.
    from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

    regex, include = GitIgnoreSpecPattern.pattern_to_regex(("!" if negated else "") + text)
    if regex is None or include is None:
        raise ValueError(f"{pattern!r} is not a pattern (see .gitignore's rules)")
    return regex, bool(include)


def check_watch_pattern(pattern: str) -> str:
    """`pattern` if it can be a `watch` entry: relative to the cwd, inside it."""
    text = pattern.removeprefix("!")
    if not text.strip():
        raise ValueError("must not be empty")
    if text.startswith("/") or ".." in text.split("/"):
        raise ValueError(
            f"{pattern!r} must be relative to the service's cwd and stay inside it"
            " (set cwd higher to watch more)"
        )
    pattern_regex(pattern, anchored=True)
    return pattern


def check_ignore_pattern(pattern: str) -> str:
    if not pattern.strip():
        raise ValueError("must not be empty")
    pattern_regex(pattern, anchored=False)
    return pattern


def root_of(pattern: str) -> tuple[str, bool]:
    """(the directory or path to watch relative to the cwd, whether it is literal):
    a literal pattern names one path (a directory means its whole tree); a glob's
    tree is watched from the directories before its first wildcard."""
    parts = [part for part in pattern.removeprefix("./").split("/") if part not in ("", ".")]
    for index, part in enumerate(parts):
        if _GLOB & set(part):
            return "/".join(parts[:index]) or ".", False
    return "/".join(parts) or ".", True


def watch_plan(
    watch: list[str],
    ignore: list[str],
    debounce: float,
    cwd: Path,
    own_dirs: list[Path],
) -> WatchPlan:
    """The compiled watch of one service. `own_dirs` (herdsman's state and log
    directories) are never watched: their files change all the time."""
    own = []
    for path in own_dirs:
        if path.is_relative_to(cwd) and path != cwd:
            own.append("/" + _escape(os.path.relpath(path, cwd)) + "/")
    return WatchPlan(
        patterns=tuple(watch),
        match=tuple(pattern_regex(p, anchored=True) for p in watch),
        ignore=tuple(pattern_regex(p, anchored=False) for p in (*DEFAULT_IGNORE, *own, *ignore)),
        roots=tuple(root_of(p) for p in watch if not p.startswith("!")),
        debounce=debounce,
    )


def _escape(path: str) -> str:
    """A path as a pattern that matches just it."""
    return "".join("\\" + char if char in "*?[]\\!#" else char for char in path)
