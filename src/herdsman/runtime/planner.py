"""Getting a plan from the validating helper (see config/plan.py), so that the
daemon never imports pydantic.

At start-up the helper is a fork of `up`, taken once the core plan (which both
sides need) is imported: the child validates while the parent goes on importing
the runtime, and neither pays for an interpreter of its own or imports the core
twice. A running daemon never forks (its spawn thread runs): `reload` starts the
helper as a program, `python -m herdsman.config.plan`.
"""

from __future__ import annotations

import gc
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

# Both sides need it: imported once, before the fork.
from herdsman.core.plan import Plan

# pydantic looks for plugins of its own in every installed distribution's entry
# points (a scan that grows with the environment) before its first model: none has
# any business in herdsman's validation. Only the helper's environment has it.
HELPER_ENVIRONMENT = {"PYDANTIC_DISABLE_PLUGINS": "__all__"}


class PlanError(Exception):
    """The config is invalid; `errors` holds one sentence per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(eq=False)
class Helper:
    """A forked helper at work: its pid, and the read end of the pipe it answers on."""

    pid: int
    answer: int


def request_plan(config: str | None) -> Helper:
    """Fork the helper. The caller must be single-threaded (it is: `up` and a new
    image that could not read its hand-over call this before any thread starts)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper: it never returns
        os.close(read_end)
        _validate_and_exit(config, write_end)
    os.close(write_end)
    return Helper(pid, read_end)


def _validate_and_exit(config: str | None, out: int) -> None:
    # Everything pydantic builds lives until the helper exits: the cyclic collector
    # would only walk it again and again, and every object inherited from `up` with
    # it (copying their pages), for a twentieth of the time to the answer.
    gc.disable()
    code = 1
    try:
        os.environ.update(HELPER_ENVIRONMENT)
        _no_plugin_loader()
        answer = import_validator()
        data, code = answer(config)
        with open(out, "wb") as pipe:
            pipe.write(data)
    except BrokenPipeError:
        pass  # the parent is gone (it failed, or was killed): no one to answer
    except KeyboardInterrupt:
        code = 130  # Ctrl-C reached the parent too: it says nothing more either
    except BaseException:
        import traceback

        traceback.print_exc()  # the parent says "see the error above"
    finally:
        sys.stderr.flush()
        # Not a normal exit: the parent's buffers, atexit handlers and open files
        # are its own, not the helper's to flush or run.
        os._exit(code)


def _no_plugin_loader() -> None:
    """pydantic's plugin loader as HELPER_ENVIRONMENT makes it answer (no plugins),
    without importing it: pydantic imports it at the first model, and its
    importlib.metadata (with email, zipfile, csv) was a ninth of the helper's work
    (63M of 529M instructions). pydantic takes only get_plugins from it (a pydantic
    that takes more fails tests/config/test_helper_imports.py)."""
    import types

    loader = types.ModuleType("pydantic.plugin._loader")
    loader.get_plugins = lambda: ()  # type: ignore[attr-defined]
    sys.modules.setdefault(loader.__name__, loader)


# What pydantic imports at its own import for types that herdsman's config never
# uses (UUID, ZoneInfo and Fraction fields, comparing a Secret): the classes it
# names, which it only files under their types. uuid loads platform, secrets loads
# hmac and OpenSSL's hashlib (35M of the forked helper's 446M instructions), and
# fractions compiles a case-insensitive regex (4M): all of them on the way to
# `up`'s first spawn.
UNUSED_BY_THE_VALIDATOR = {
    "uuid": ("UUID",),
    "zoneinfo": ("ZoneInfo", "ZoneInfoNotFoundError"),
    "secrets": (),
    "fractions": ("Fraction",),
}


def import_validator() -> Callable[[str | None], tuple[bytes, int]]:
    """config.plan's `answer`, imported with a stand-in for each module of
    UNUSED_BY_THE_VALIDATOR not loaded yet (its classes, empty): the models build
    their validators as they are imported (pydantic-core looks up uuid's class as
    it builds one). They are gone from sys.modules once it is: what imports one
    later (a plugin the config names) gets the real module. A pydantic that uses
    more of them than it files, or validators built later (defer_build), fail
    tests/config/test_helper_imports.py.

    typing compiles the text of every annotation written as text (a ForwardRef)
    as it makes one: pydantic-core's TypedDicts make 763, of 227 texts (24M
    instructions; 15M with each text compiled once). Only eval reads the code
    (typing's and typing_extensions' evaluation), and it takes the text as well,
    compiled as it is evaluated (a text that is no expression fails then, not as
    its ForwardRef is made); the validator evaluates none of them. So while it
    is imported, typing's own `compile` (ForwardRef finds it in typing's globals
    before the builtin) leaves each text as it is. And typing_extensions checks
    each of those annotations with typing's _type_check, which for a text makes
    its ForwardRef and then compares it with eight special forms, an __eq__ call
    each that can only say no (4,800 calls, 10M instructions): see
    _text_checked_at_once.

    And the methods dataclasses makes for the classes of pydantic and
    annotated_types (210, each compiled from source text: 92M instructions, a
    quarter of the helper's work) are made on their first call (see
    _made_when_called): the validator calls 12 of the 160 others, and 50 __init__
    of which it calls a few (those put off too: 8M instructions more)."""
    import dataclasses
    import types
    import typing

    stand_ins = {}
    for name, classes in UNUSED_BY_THE_VALIDATOR.items():
        if name not in sys.modules:
            module = types.ModuleType(name, "a stand-in while the validator is imported")
            for cls in classes:
                setattr(module, cls, type(cls, (Exception,) if cls.endswith("Error") else (), {}))
            stand_ins[name] = sys.modules[name] = module

    def as_text(source: str, _filename: str, _mode: str) -> str:
        return source

    setattr(typing, "compile", as_text)  # noqa: B010 (typing has no such name for mypy)
    type_check = typing._type_check  # type: ignore[attr-defined]
    if sys.version_info < (3, 14):
        setattr(typing, "_type_check", _text_checked_at_once(type_check))  # noqa: B010
    # Python 3.13 makes them otherwise (all of a class's at once): left as it is.
    create_fn = getattr(dataclasses, "_create_fn", None)
    if create_fn is not None:
        setattr(dataclasses, "_create_fn", _made_when_called(create_fn))  # noqa: B010
    try:
        from herdsman.config.plan import answer
    finally:
        delattr(typing, "compile")
        setattr(typing, "_type_check", type_check)  # noqa: B010
        if create_fn is not None:
            setattr(dataclasses, "_create_fn", create_fn)  # noqa: B010
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return answer


def _text_checked_at_once(type_check: Callable[..., Any]) -> Callable[..., Any]:
    """typing's `_type_check(arg, msg, is_argument, module, *, allow_special_forms)`,
    answering a text as it does (Python 3.11 to 3.13) without its comparisons: the
    text becomes a ForwardRef (_type_convert), which is no generic alias, no
    special form, neither Any, Generic, Protocol, ClassVar nor Final, and no tuple,
    so it is returned as it is. Anything else is checked as before."""
    import typing

    def check(
        arg: object,
        msg: str,
        is_argument: bool = True,
        module: str | None = None,
        *,
        allow_special_forms: bool = False,
    ) -> Any:
        if isinstance(arg, str):
            return typing.ForwardRef(arg, module=module, is_class=allow_special_forms)
        return type_check(arg, msg, is_argument, module, allow_special_forms=allow_special_forms)

    return check


def _made_when_called(create_fn: Callable[..., Any]) -> Callable[..., Any]:
    """dataclasses' `_create_fn(name, args, body, **where)`, which compiles a method
    from its source text, with the compiling put off until the method's first call
    (then the same function, from the same text and namespaces). An __init__'s
    signature is its class's, which dataclasses reads as it makes a class without
    a docstring (to write one) and pydantic may read: the one of the function
    made, made when read (_signature_when_read)."""
    signature_when_read = _signature_when_read()

    def create(name: str, args: list[str], body: list[str], **where: Any) -> Callable[..., Any]:
        made: Callable[..., Any] | None = None

        def make() -> Callable[..., Any]:
            nonlocal made
            if made is None:
                made = cast(Callable[..., Any], create_fn(name, args, body, **where))
            return made

        def method(*given: Any, **named: Any) -> Any:
            return make()(*given, **named)

        method.__name__ = name
        if name == "__init__":
            method.__signature__ = signature_when_read(make)  # type: ignore[attr-defined]
        return method

    return create


def _signature_when_read() -> Callable[[Callable[[], Callable[..., Any]]], Any]:
    """Signatures of the function `make()` returns, each made (and so the function)
    once first read. inspect takes a function's __signature__ for its own; what a
    Signature answers goes through its parameters and return annotation
    (_parameters, _return_annotation), but for replace, repr and pickling, which
    name its class: those are the made one's."""
    import inspect

    class SignatureWhenRead(inspect.Signature):
        __slots__ = ("_make", "_read")

        def __init__(self, make: Callable[[], Callable[..., Any]]) -> None:
            self._make = make
            self._read: inspect.Signature | None = None

        def _made(self) -> inspect.Signature:
            if self._read is None:
                self._read = inspect.signature(self._make())
            return self._read

        _parameters = property(lambda self: self._made()._parameters)
        _return_annotation = property(lambda self: self._made()._return_annotation)

        def replace(self, **changes: Any) -> inspect.Signature:  # type: ignore[override]
            return self._made().replace(**changes)

        def __repr__(self) -> str:
            return repr(self._made())

        def __reduce__(self) -> Any:
            return self._made().__reduce__()

    return SignatureWhenRead


def receive_plan(helper: Helper) -> Plan:
    with open(helper.answer, "rb") as pipe:
        data = pipe.read()
    try:
        # Unpickled while the helper's exit tears down its memory; reaped after.
        answer = _loads(data)
    finally:
        _, status = os.waitpid(helper.pid, 0)
    return _plan_of(answer, f"exit code {os.waitstatus_to_exitcode(status)}")


def helper_argv(config: Path, out: Path) -> tuple[str, ...]:
    """The validating helper for a daemon's reload: it writes its answer to `out`."""
    return (
        sys.executable,
        "-P",  # the current directory shadows nothing
        "-m",
        "herdsman.config.plan",
        "-c",
        str(config),
        "--out",
        str(out),
    )


def unpickle_plan(data: bytes, how_it_ended: str) -> Plan:
    """The helper's answer: the Plan, or PlanError with its errors."""
    return _plan_of(_loads(data), how_it_ended)


def _loads(data: bytes) -> object:
    """The helper's answer unpickled; None when it is no answer (the helper failed)."""
    try:
        return pickle.loads(data)
    except Exception:
        return None


def _plan_of(answer: object, how_it_ended: str) -> Plan:
    if not (isinstance(answer, tuple) and len(answer) == 2):
        raise PlanError([f"the config validator failed ({how_it_ended}); see the error above"])
    kind, value = answer
    if kind == "errors":
        raise PlanError(list(value))
    if not isinstance(value, Plan):
        raise PlanError(["the config validator answered something unexpected"])
    return value
