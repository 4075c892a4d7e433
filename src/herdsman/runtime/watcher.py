"""Restart on file changes (`watch`): inotify, read from the event loop.

One inotify descriptor serves every service that declares `watch`; the loop reads it
when the kernel says it is readable (`add_reader`), so there is no thread and no
wake-up while nothing changes. inotify watches directories, not trees: each
directory a pattern can reach gets its own watch (ignored ones are never entered),
and directories created later are added as they appear.

A matching change arms the service's debounce timer; each further one re-arms it, so
a burst of saves ends in one restart, once the tree has been quiet for
`watch_debounce`. What to watch is read from the daemon's current plan at every
`sync` (start, reload), and the debounce and patterns at every event, so a reload
changes them in place.

This module is imported only when some service declares `watch` and watching is on
(`herdsman up --watch`): a daemon without it pays nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import inotify_simple
from inotify_simple import flags

from herdsman.core.plan import Plan, WatchPlan

# What counts as a change: a file written and closed, created (a symlink, a new
# directory), removed or renamed. Not IN_MODIFY: a file is restarted for once it
# is saved (closed), not at each write while it is being saved.
CHANGES = flags.CLOSE_WRITE | flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO
MASK = CHANGES | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR | flags.EXCL_UNLINK

# (service, the paths that changed relative to its cwd, first first)
ChangeCallback = Callable[[str, list[str]], None]


@dataclass
class _Service:
    """One service's watch, as compiled at the last sync."""

    cwd: str
    plan: WatchPlan
    match: list[tuple[re.Pattern[str], bool]]
    ignore: list[tuple[re.Pattern[str], bool]]
    # Watched directories: True when the ones created inside it are watched too.
    dirs: dict[str, bool] = field(default_factory=dict)
    # Literal paths not there yet, watched through their directory: one that
    # appears as a directory gets its tree watched.
    awaited: set[str] = field(default_factory=set)
    # What changed since the last restart, in order (a dict: a checkout of ten
    # thousand files must not cost a scan of the list per file).
    changed: dict[str, None] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


def _compiled(patterns: tuple[tuple[str, bool], ...]) -> list[tuple[re.Pattern[str], bool]]:
    return [(re.compile(regex), include) for regex, include in patterns]


def _last_match(patterns: list[tuple[re.Pattern[str], bool]], path: str) -> bool:
    """gitignore's rule: the last pattern that matches decides (`!` ones exclude)."""
    decided = False
    for regex, include in patterns:
        if regex.match(path):
            decided = include
    return decided


class Watcher:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_change: ChangeCallback,
        log: logging.Logger,
    ) -> None:
        self._loop = loop
        self._on_change = on_change
        self._log = log
        self._inotify = inotify_simple.INotify(nonblocking=True)
        self._services: dict[str, _Service] = {}
        self._wd_dir: dict[int, str] = {}
        self._dir_wd: dict[str, int] = {}
        self._warned: set[str] = set()
        loop.add_reader(self._inotify.fd, self._readable)

    # --- what to watch -----------------------------------------------------------

    def sync(self, plan: Plan) -> None:
        """Watch what `plan` asks for: services that gained, changed or lost `watch`
        get their directories added or dropped; debounces under way are kept."""
        wanted: dict[str, tuple[str, WatchPlan]] = {}
        for name, svc in plan.services.items():
            watch = getattr(svc, "watch", None)  # a plan pickled before `watch` existed
            if watch is not None and svc.instances:
                wanted[name] = (os.path.normpath(svc.instances[0].cwd), watch)
        for name in list(self._services):
            if name not in wanted:
                self._drop(name)
        for name, (cwd, watch) in wanted.items():
            old = self._services.get(name)
            if old is not None and old.cwd == cwd and old.plan == watch:
                continue
            service = _Service(cwd, watch, _compiled(watch.match), _compiled(watch.ignore))
            if old is not None:
                service.changed, service.timer = old.changed, old.timer
            self._services[name] = service
            self._add_roots(service)
            count = len(service.dirs)
            self._log.info(
                "%s: watching %d director%s for changes", name, count, "y" if count == 1 else "ies"
            )
            if old is not None:
                self._release(set(old.dirs) - set(service.dirs))

    def close(self) -> None:
        for service in self._services.values():
            if service.timer is not None:
                service.timer.cancel()
        self._services.clear()
        self._loop.remove_reader(self._inotify.fd)
        self._inotify.close()

    def watched_dirs(self) -> set[str]:
        """Every directory with an inotify watch."""
        return set(self._dir_wd)

    def _drop(self, name: str) -> None:
        service = self._services.pop(name)
        if service.timer is not None:
            service.timer.cancel()
        self._release(set(service.dirs))

    def _release(self, dirs: set[str]) -> None:
        """Remove the inotify watch of each of `dirs` that no service uses any more."""
        used = {d for service in self._services.values() for d in service.dirs}
        for path in dirs - used:
            wd = self._dir_wd.pop(path, None)
            if wd is not None:
                self._wd_dir.pop(wd, None)
                with contextlib.suppress(OSError):  # gone, and its watch with it
                    self._inotify.rm_watch(wd)

    def _add_roots(self, service: _Service) -> None:
        for prefix, literal in service.plan.roots:
            root = os.path.normpath(os.path.join(service.cwd, prefix))
            if os.path.isdir(root):
                self._add_tree(service, root, tree=True)
            elif literal and os.path.isdir(os.path.dirname(root)):
                # A file (or nothing yet): its directory tells when it is written.
                service.awaited.add(root)
                self._add_dir(service, os.path.dirname(root), tree=False)
            else:
                self._warn(root, f"watch: {root} does not exist; it is not watched")

    def _add_tree(self, service: _Service, top: str, *, tree: bool) -> list[str]:
        """Watch `top` (and, with `tree`, every directory under it that is not ignored);
        the files found on the way."""
        found: list[str] = []
        if not self._add_dir(service, top, tree=tree) or not tree:
            return found
        for parent, dirs, files in os.walk(top, onerror=lambda _: None):
            kept = []
            for name in dirs:
                path = os.path.join(parent, name)
                ignored = self._ignored(service, path, directory=True)
                if not ignored and self._add_dir(service, path, tree=True):
                    kept.append(name)
            dirs[:] = kept
            found += [os.path.join(parent, name) for name in files]
        return found

    def _add_dir(self, service: _Service, path: str, *, tree: bool) -> bool:
        if path in service.dirs:
            service.dirs[path] = service.dirs[path] or tree
            return True
        wd = self._dir_wd.get(path)
        if wd is None:
            try:
                wd = self._inotify.add_watch(path, MASK)
            except OSError as err:
                if err.errno == 28:  # ENOSPC: fs.inotify.max_user_watches
                    why = "the inotify watch limit (sysctl fs.inotify.max_user_watches) is reached"
                else:
                    why = err.strerror or str(err)
                self._warn(path, f"watch: cannot watch {path}: {why}")
                return False
            self._wd_dir[wd] = path
            self._dir_wd[path] = wd
        service.dirs[path] = tree
        return True

    def _warn(self, path: str, message: str) -> None:
        if path not in self._warned:  # once per path, not at every reload
            self._warned.add(path)
            self._log.warning("%s", message)

    # --- events ------------------------------------------------------------------

    def _readable(self) -> None:
        for event in self._inotify.read(timeout=0):
            if event.mask & flags.Q_OVERFLOW:
                # Events were lost: any service may have changed.
                for name in self._services:
                    self._changed(name, "files")  # too many changes at once to tell which
                continue
            directory = self._wd_dir.get(event.wd)
            if directory is None:
                continue
            if event.mask & (flags.MOVE_SELF | flags.IGNORED):
                # Moved where its parent does not see it, or gone: its path is stale.
                self._forget(directory)
                continue
            if event.mask & flags.DELETE_SELF:
                continue  # IGNORED follows
            self._event(directory, event.name, event.mask)

    def _forget(self, top: str) -> None:
        """Drop the watches of `top` and of every directory under it: moved or removed.
        At once, not at its IGNORED event: a directory renamed within the tree is added
        again under its new name by then, and the kernel would hand back the same wd."""
        for path in [d for d in self._dir_wd if d == top or d.startswith(top + "/")]:
            wd = self._dir_wd.pop(path)
            self._wd_dir.pop(wd, None)
            with contextlib.suppress(OSError):  # removed with its directory already
                self._inotify.rm_watch(wd)
            for service in self._services.values():
                service.dirs.pop(path, None)

    def _event(self, directory: str, name: str, mask: int) -> None:
        path = os.path.join(directory, name)
        if mask & flags.ISDIR and mask & (flags.MOVED_FROM | flags.DELETE):
            self._forget(path)
        new_dir = bool(mask & flags.ISDIR and mask & (flags.CREATE | flags.MOVED_TO))
        for service_name, service in list(self._services.items()):
            if directory not in service.dirs or self._ignored(
                service, path, bool(mask & flags.ISDIR)
            ):
                continue
            paths = [path]
            if new_dir and (service.dirs[directory] or path in service.awaited):
                # Files may have landed in it before its watch was in place.
                paths = self._add_tree(service, path, tree=True)
            elif new_dir:
                paths = []  # an empty directory changes nothing a service reads
            for changed in paths:
                if self._matches(service, changed):
                    self._changed(service_name, os.path.relpath(changed, service.cwd))

    @staticmethod
    def _matches(service: _Service, path: str) -> bool:
        return _last_match(service.match, os.path.relpath(path, service.cwd))

    @staticmethod
    def _ignored(service: _Service, path: str, directory: bool = False) -> bool:
        relative = os.path.relpath(path, service.cwd)
        return _last_match(service.ignore, relative + "/" if directory else relative)

    def _changed(self, name: str, path: str) -> None:
        service = self._services[name]
        service.changed.setdefault(path)
        if service.timer is not None:
            service.timer.cancel()
        service.timer = self._loop.call_later(service.plan.debounce, self._quiet, name)

    def _quiet(self, name: str) -> None:
        service = self._services[name]
        changed, service.changed, service.timer = service.changed, {}, None
        self._on_change(name, list(changed))
