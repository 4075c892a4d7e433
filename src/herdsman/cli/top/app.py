"""The `herdsman top` screen, built with Textual: the instances' table above, the
selected instance's output (or every instance's, merged) below.

State comes from `/v1/events` (a snapshot of every instance, then each change); only CPU and
memory are asked for again, every `interval` seconds (`top -d S`). When the event stream ends,
the next subscription tells what happened: the daemon re-executed (same socket, a
new image: reconnect and say so) or it is gone (say so, and try again every
RETRY_EVERY seconds until one answers or the user quits).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlencode

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, RichLog, Static

from herdsman.cli import table
from herdsman.cli.client import ClientError, instance_path
from herdsman.cli.stream import AsyncClient, events, is_gone
from herdsman.cli.top.model import COLUMNS, Model, cells
from herdsman.core.signals import parse_signal
from herdsman.core.states import State

RETRY_EVERY = 1.0  # seconds between attempts to reach a daemon that is gone
BACKLOG = 200  # lines of output shown when a log starts being followed
LOG_LIMIT = 5000  # lines kept in the log pane
STATE_STYLES: dict[str, str] = {
    State.RUNNING: "green",
    State.STARTING: "yellow",
    State.RESTARTING: "yellow",
    State.STOPPING: "yellow",
    State.FAILED: "bold red",
    State.EXITED: "dim",
    State.STOPPED: "dim",
}
INSTANCE_STYLES = ("cyan", "yellow", "green", "magenta", "blue", "red")
KEYS = (
    ("↑ ↓", "select an instance"),
    ("enter / d", "the selected instance's details"),
    ("s", "start it"),
    ("x", "stop it (asks first)"),
    ("r", "restart it"),
    ("k", "send it a signal"),
    ("a", "output: the selected instance, or all merged"),
    ("/", "filter: a glob (web*) or text in the name or state"),
    ("o / O", "sort by the next column / the other way round"),
    ("?", "these keys"),
    ("q", "quit"),
)


class TopApp(App[int]):
    """The dashboard for one daemon (one endpoint)."""

    TITLE = "herdsman top"
    ENABLE_COMMAND_PALETTE = False  # every action has its key; `?` lists them
    CSS = """
    #heading { height: 1; background: $panel; padding: 0 1; }
    #banner { height: auto; padding: 0 1; display: none; }
    #banner.problem { display: block; background: $error; color: $text; }
    #banner.note { display: block; background: $warning; color: $text; }
    #instances { height: 1fr; }
    #output-title { height: 1; background: $panel; padding: 0 1; }
    #output { height: 1fr; }
    #filter { dock: bottom; display: none; }
    #filter.shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "keys", "keys"),
        Binding("s", "act('start')", "start"),
        Binding("x", "stop", "stop"),
        Binding("r", "act('restart')", "restart"),
        Binding("k", "signal", "signal"),
        Binding("d", "detail", "detail"),
        Binding("a", "toggle_all", "all output"),
        Binding("slash", "filter", "filter"),
        Binding("o", "sort", "sort"),
        Binding("O", "reverse", "reverse", show=False),
    ]

    def __init__(self, client: AsyncClient, *, interval: float = 2.0) -> None:
        super().__init__()
        self.client = client
        self.interval = interval  # seconds between CPU/memory refreshes
        self.model = Model()
        self.selected: str | None = None
        self.all_output = False
        self.connected = False
        self._shown_keys: list[str] = []
        # Each column's width on screen, set by us: Textual measures an auto-width column
        # only when idle and keeps a row it drew before that, so a cell wider than its
        # column stayed cut ("killed" for "killed by SIGKILL") until the next change.
        self._widths = [len(column.label) for column in COLUMNS]
        self._names: list[str] = []  # for colouring the merged output, in config order

    # --- layout -----------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="heading")
        yield Static(id="banner")
        with Vertical():
            grid: DataTable[Text | str] = DataTable(
                id="instances", cursor_type="row", zebra_stripes=True
            )
            yield grid
            yield Static(id="output-title")
            yield RichLog(id="output", max_lines=LOG_LIMIT, wrap=False, markup=False)
        yield Input(id="filter", placeholder="filter: a glob (web*) or text; enter to keep")
        yield Footer()

    def on_mount(self) -> None:
        grid = self.query_one("#instances", DataTable)
        self.add_columns(grid)
        grid.focus()  # the keys move through the table, not into the (hidden) filter
        self.heading()
        self.watch_daemon()
        self.set_interval(self.interval, self.refresh_samples)

    # --- the connection ---------------------------------------------------------

    @work(exclusive=True, group="daemon")
    async def watch_daemon(self) -> None:
        reexecs: int | None = None
        gone_since_connected = False
        while True:
            try:
                response = await self.client.subscribe()
            except ClientError as err:
                self.lost(err)
                gone_since_connected = True
                await asyncio.sleep(RETRY_EVERY)
                continue
            async for kind, document in events(response):
                if kind != "snapshot":
                    self.model.apply(document)
                    self.redraw()
                    continue
                # Every instance as the stream begins: the changes that follow are
                # the ones after it, none twice.
                daemon = document.get("daemon") or {}
                count = int(daemon.get("reexecs", 0))
                if reexecs is not None and count > reexecs:
                    self.say(
                        f"the daemon re-executed (pid {daemon.get('pid')},"
                        f" herdsman {daemon.get('version')}): reconnected",
                        problem=False,
                    )
                elif gone_since_connected:
                    self.say(f"connected to the daemon (pid {daemon.get('pid')})", problem=False)
                elif daemon.get("shutting_down"):
                    self.say("the daemon is stopping everything and will exit", problem=False)
                else:
                    self.say(None)
                reexecs, gone_since_connected = count, False
                self.connected = True
                self.model.snapshot(document, self.model.events_seen)
                self.redraw()
                self.follow_output()
            self.connected = False
            self.say("the daemon ended its event stream: reconnecting…", problem=False)

    def lost(self, err: ClientError) -> None:
        self.connected = False
        if is_gone(err):
            where = self.client.endpoint.describe()
            self.say(
                f"the daemon is gone: nothing answers at {where}. Waiting for one"
                " to start (q quits)."
            )
        else:
            self.say(f"{err.message} (trying again; q quits)")
        self.redraw()

    async def refresh_samples(self) -> None:
        """CPU and memory (and uptimes) move without events: ask for them now and then."""
        if not self.connected:
            return
        seen = self.model.events_seen
        try:
            status = await self.client.request("GET", "/v1/status")
        except ClientError:
            return  # the event stream tells when the daemon went away
        self.model.snapshot(status, seen)
        self.redraw()

    @work(exclusive=True, group="output")
    async def follow_output(self) -> None:
        """Follow the selected instance's output, or everyone's; a new call replaces
        the previous follower (exclusive), and a reconnection starts a new one."""
        log = self.query_one("#output", RichLog)
        log.clear()
        instance = None if self.all_output else self.selected
        title = self.query_one("#output-title", Static)
        if not self.all_output and instance is None:
            title.update("output: no instance selected")
            return
        title.update(
            "output: all instances, merged (a: the selected one only)"
            if instance is None
            else f"output: {escape(instance)} (a: all instances merged)"
        )
        query: dict[str, str | int] = {"n": BACKLOG, "follow": 1}
        if instance is not None:
            query["instance"] = instance
        try:
            async for entry in self.client.ndjson(f"/v1/logs?{urlencode(query)}"):
                log.write(self.output_line(entry, merged=instance is None))
        except ClientError:
            return  # the daemon went away; the event stream says so and starts a new one
        if self.connected:
            # The daemon dropped this follower for falling behind (a flood): follow
            # again, from its last lines. (At a re-exec the new snapshot does it.)
            self.follow_output()

    def output_line(self, entry: Mapping[str, Any], *, merged: bool) -> Text:
        line = Text(str(entry.get("line", "")), style="red" if entry.get("stream") == "err" else "")
        if not merged:
            return line
        name = str(entry.get("instance"))
        if name not in self._names:
            self._names.append(name)
        style = INSTANCE_STYLES[self._names.index(name) % len(INSTANCE_STYLES)]
        width = max((len(n) for n in self.model.instances), default=len(name))
        return Text.assemble((f"{name.ljust(width)} │ ", style), line)

    # --- drawing ----------------------------------------------------------------

    def heading(self) -> None:
        daemon = self.model.daemon
        where = self.client.endpoint
        what = where.config if where.config is not None else where.describe()
        about = (
            f" · pid {daemon.get('pid')} · herdsman {daemon.get('version')}"
            if daemon and self.connected
            else ""
        )
        # Sorting and filtering are said only when they hide the config's order.
        sort = self.model.sort_key or ("config order" if self.model.reverse else "")
        sort = f" · sort: {sort}{' ↓' if self.model.reverse else ''}" if sort else ""
        shown = f" · filter {self.model.pattern!r}" if self.model.pattern else ""
        self.query_one("#heading", Static).update(
            Text(f"{what}{about} · {self.model.counts()}{sort}{shown}")
        )

    def say(self, text: str | None, *, problem: bool = True) -> None:
        """The banner under the heading: what is wrong with the connection (red), a
        note about it (yellow), or nothing."""
        banner = self.query_one("#banner", Static)
        banner.set_classes("problem" if problem else "note") if text else banner.set_classes("")
        banner.update(Text(text or ""))

    def redraw(self) -> None:
        self.heading()
        grid = self.query_one("#instances", DataTable)
        rows = self.model.rows()
        keys = [str(i["name"]) for i in rows]
        stale = not self.connected
        cells = {str(i["name"]): self.row(i, stale) for i in rows}
        # A column grows to its widest cell and never shrinks (no jitter as values change).
        widths = [
            max([width, *(values[i].cell_len for values in cells.values())])
            for i, width in enumerate(self._widths)
        ]
        wider = widths != self._widths
        if wider:
            self._widths = widths
            grid.clear(columns=True)
            self.add_columns(grid)
        if keys != self._shown_keys or wider:
            grid.clear()
            for name, values in cells.items():
                grid.add_row(*values, key=name)
            self._shown_keys = keys
            if self.selected in keys:
                grid.move_cursor(row=keys.index(self.selected), animate=False)
        else:
            for name, values in cells.items():
                for column, value in zip(COLUMNS, values, strict=True):
                    grid.update_cell(name, column.key, value)
        if keys and self.selected not in keys:
            self.select(keys[min(grid.cursor_row, len(keys) - 1)])
        for screen in self.screen_stack:
            if isinstance(screen, DetailScreen):
                screen.show(self.model.instances.get(screen.name_shown))

    def add_columns(self, grid: DataTable[Text | str]) -> None:
        for column, width in zip(COLUMNS, self._widths, strict=True):
            grid.add_column(column.label, key=column.key, width=width)

    @staticmethod
    def row(inst: Mapping[str, Any], stale: bool) -> list[Text]:
        values: list[Text] = []
        for column, text in zip(COLUMNS, cells(inst), strict=True):
            style = "dim" if stale else ""
            if column.key == "state" and not stale:
                style = STATE_STYLES.get(text, "")
            values.append(Text(text, style=style, justify="right" if column.right else "left"))
        return values

    def select(self, name: str | None) -> None:
        if name == self.selected:
            return
        self.selected = name
        if not self.all_output:
            self.follow_output()

    @on(DataTable.RowHighlighted, "#instances")
    def highlighted(self, message: DataTable.RowHighlighted) -> None:
        if message.row_key.value is not None:
            self.select(message.row_key.value)

    @on(DataTable.RowSelected, "#instances")
    def chosen(self, message: DataTable.RowSelected) -> None:
        self.action_detail()

    @on(DataTable.HeaderSelected, "#instances")
    def header_clicked(self, message: DataTable.HeaderSelected) -> None:
        key = str(message.column_key.value)
        if key != "message":
            self.model.sort_by(key)
            self.redraw()

    # --- keys -------------------------------------------------------------------

    def action_keys(self) -> None:
        self.push_screen(KeysScreen())

    def action_detail(self) -> None:
        if self.selected is not None:
            screen = DetailScreen(self.selected)
            self.push_screen(screen)
            screen.show(self.model.instances.get(self.selected))

    def action_toggle_all(self) -> None:
        self.all_output = not self.all_output
        self.follow_output()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.value = self.model.pattern
        box.focus()

    @on(Input.Changed, "#filter")
    def filter_typed(self, message: Input.Changed) -> None:
        self.model.pattern = message.value
        self.redraw()

    @on(Input.Submitted, "#filter")
    def filter_done(self, message: Input.Submitted) -> None:
        box = self.query_one("#filter", Input)
        if not box.value:
            box.remove_class("shown")
        self.query_one("#instances", DataTable).focus()

    def action_sort(self) -> None:
        self.model.cycle_sort()
        self.redraw()

    def action_reverse(self) -> None:
        self.model.reverse = not self.model.reverse
        self.redraw()

    def action_act(self, action: str) -> None:
        if self.selected is not None:
            self.request(action, self.selected, {"wait": False})

    def action_stop(self) -> None:
        name = self.selected
        if name is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.request("stop", name, {"wait": False})

        self.push_screen(ConfirmScreen(f"Stop {name}? (y/n)"), answered)

    def action_signal(self) -> None:
        name = self.selected
        if name is None:
            return

        def answered(text: str | None) -> None:
            if not text:
                return
            try:
                sig = parse_signal(text.strip())
            except ValueError as err:
                self.notify(str(err), severity="error")
                return
            self.request("signal", name, {"signal": sig})

        self.push_screen(SignalScreen(name), answered)

    @work(group="requests")
    async def request(self, action: str, name: str, body: dict[str, Any]) -> None:
        try:
            answer = await self.client.request("POST", instance_path(name, action), body)
        except ClientError as err:
            self.notify(f"{action} {name}: {err.message}", severity="error")
            return
        if action == "signal":
            for inst in answer.get("instances") or []:
                sent = f"sent {body['signal']}" if inst.get("pid") else "nothing to signal"
                self.notify(f"{inst['name']}: {sent}")
        else:
            self.notify(f"{action}: {name}")


class KeysScreen(ModalScreen[None]):
    """`?`: what each key does."""

    DEFAULT_CSS = """
    KeysScreen { align: center middle; }
    KeysScreen > Static { width: auto; border: round $accent; padding: 1 2; background: $panel; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "close"),
    ]

    def compose(self) -> ComposeResult:
        width = max(len(k) for k, _ in KEYS)
        lines = [f"{k.ljust(width)}  {what}" for k, what in KEYS]
        yield Static(Text("\n".join(["Keys", "", *lines, "", "escape closes this"])))

    def action_close(self) -> None:
        self.dismiss()


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question: y answers yes; n or escape, no."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Static { width: auto; border: round $warning; padding: 1 2; background: $panel; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(Text(self.question))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class SignalScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    SignalScreen { align: center middle; }
    SignalScreen > Vertical { width: 50; height: auto; border: round $accent; background: $panel; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name_shown = name

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(f"Signal for {self.name_shown} (HUP, TERM, 10...); enter sends"))
            yield Input(value="HUP", id="signal")

    @on(Input.Submitted, "#signal")
    def submitted(self, message: Input.Submitted) -> None:
        self.dismiss(message.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class DetailScreen(ModalScreen[None]):
    """One instance's whole document, kept up to date; escape (or d, q) closes it."""

    DEFAULT_CSS = """
    DetailScreen { align: center middle; }
    DetailScreen > Static { width: 80%; height: auto; border: round $accent; padding: 1 2;
        background: $panel; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "close"),
        Binding("d", "close", "close"),
        Binding("q", "close", "close"),
    ]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name_shown = name

    def compose(self) -> ComposeResult:
        yield Static(id="detail")

    def show(self, inst: Mapping[str, Any] | None) -> None:
        if not self.is_mounted:
            self.call_after_refresh(self.show, inst)
            return
        lines = [Text(self.name_shown, style="bold"), Text("")]
        if inst is None:
            lines.append(Text("no longer in the config"))
        else:
            width = max(len(k) for k in inst)
            for key, value in inst.items():
                text = json.dumps(value) if not isinstance(value, str) else value
                if key == "uptime":
                    text = table.uptime(value)
                elif key == "rss_bytes":
                    text = table.memory(value)
                style = STATE_STYLES.get(text, "") if key == "state" else ""
                lines.append(Text.assemble(f"{key.ljust(width)}  ", (text, style)))
        lines += [Text(""), Text("escape closes", style="dim")]
        self.query_one("#detail", Static).update(Text("\n").join(lines))

    def action_close(self) -> None:
        self.dismiss()
