"""The validating helper of `up`: what it loads, what its plans stay readable as,
and what `up` says when it dies without answering.

The helper (a fork of `up`) is the critical path of a start: everything it imports
is time before the first spawn. It builds the plan without the instance lifecycle,
which only the daemon needs. Checked in fresh interpreters; nothing here is timed.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from herdsman.core.plan import CheckPlan, InstancePlan, Policy


def test_the_validating_helper_builds_a_plan_without_the_lifecycle() -> None:
    code = (
        "import sys, herdsman.config.plan;"
        "print(' '.join(m for m in ('herdsman.core.lifecycle', 'herdsman.core.herd')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def test_the_forked_helper_validates_without_looking_for_pydantic_plugins(
    tmp_path: Path,
) -> None:
    # pydantic's plugin loader imports importlib.metadata (a ninth of the helper's
    # work); the helper validates, hooks and checks included, without it.
    config = tmp_path / "herdsman.toml"
    config.write_text(
        '[services.db]\ncommand = "sleep 1"\nready = { tcp = "127.0.0.1:6390" }\n'
        'health = { exec = "true" }\nhooks = [{ on = "failed", exec = "true" }]\n'
    )
    out = _plan_services_without(config, ("importlib.metadata",))
    assert (out.returncode, out.stdout.strip()) == (0, "['db']"), out.stderr


def test_the_forked_helper_validates_without_uuid_zoneinfo_secrets_and_fractions(
    tmp_path: Path,
) -> None:
    # pydantic imports them for types the config never uses (39M of the helper's
    # 446M instructions): the helper validates every kind of check and hook without
    # them, and a pydantic that came to use them at its import would fail here.
    config = tmp_path / "herdsman.toml"
    config.write_text(
        '[services.db]\ncommand = "sleep 1"\nready = { tcp = "127.0.0.1:6390" }\n'
        'health = { http = "http://127.0.0.1:6390/" }\nmemory_limit = "1GiB"\n'
        'hooks = [{ on = "failed", exec = "true" }, { on = "running", webhook = "http://x/" }]\n'
        '[services.web]\ncommand = ["sleep", "1"]\ndepends_on = { db = "ready" }\n'
    )
    out = _plan_services_without(config, ("uuid", "zoneinfo", "secrets", "fractions"))
    assert (out.returncode, out.stdout.strip()) == (0, "['db', 'web']"), out.stderr


def _plan_services_without(
    config: Path, blocked: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter in which the modules `blocked` cannot be imported forks the
    validating helper for `config` and prints the services of its plan."""
    code = (
        "import sys\n"
        "class Blocked:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name in {blocked!r}:\n"
        "            raise ImportError(name + ' is imported')\n"
        "sys.meta_path.insert(0, Blocked())\n"
        "from herdsman.runtime.planner import receive_plan, request_plan\n"
        f"print(sorted(receive_plan(request_plan({str(config)!r})).services))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_the_modules_the_validator_goes_without_are_real_once_it_is_imported() -> None:
    # What imports them after the validator (a plugin the config names) gets them.
    code = (
        "from herdsman.runtime.planner import import_validator\n"
        "import_validator()\n"
        "import fractions, secrets, uuid, zoneinfo\n"
        "print(uuid.UUID(int=1).int, len(secrets.token_hex(2)), zoneinfo.ZoneInfo.__module__,"
        " fractions.Fraction(2, 4))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.split()) == (0, ["1", "4", "zoneinfo", "1/2"]), out.stderr


def test_the_validator_is_imported_without_compiling_annotation_texts() -> None:
    # pydantic-core's TypedDicts give typing 763 annotations as text (227 texts):
    # each keeps its text as its code, which eval takes as it would a code object.
    # typing's own `compile` is gone afterwards.
    code = (
        "import typing\n"
        "from herdsman.runtime.planner import import_validator\n"
        "import_validator()\n"
        "from pydantic_core import core_schema\n"
        "refs = [ref for cls in vars(core_schema).values()\n"
        "        for ref in getattr(cls, '__annotations__', {}).values()\n"
        "        if isinstance(ref, typing.ForwardRef)]\n"
        "hints = typing.get_type_hints(core_schema.IntSchema)\n"
        "print(len(refs) > 100, all(ref.__forward_code__ == ref.__forward_arg__ for ref in refs),"
        " hints['strict'] is bool,"
        " 'compile' in vars(typing), type(typing.ForwardRef('int').__forward_code__).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.split()) == (0, ["True", "True", "True", "False", "code"]), (
        out.stderr
    )


def test_the_validator_is_imported_without_comparing_each_annotation_text() -> None:
    # typing's _type_check compared the ForwardRef of every annotation text with
    # eight special forms (4,800 __eq__ calls); while the validator is imported a
    # text is made its ForwardRef at once, the one _type_check makes, and anything
    # else is checked as before. _type_check is typing's own again afterwards.
    code = (
        "import typing\n"
        "calls = []\n"
        "eq = typing.ForwardRef.__eq__\n"
        "typing.ForwardRef.__eq__ = lambda self, other: calls.append(1) or eq(self, other)\n"
        "type_check = typing._type_check\n"
        "from herdsman.runtime.planner import _text_checked_at_once, import_validator\n"
        "import_validator()\n"
        "typing.ForwardRef.__eq__ = eq\n"
        "check = _text_checked_at_once(type_check)\n"
        "same = all(\n"
        "    check(*args, **named) == type_check(*args, **named)\n"
        "    for args, named in [(('int', 'm'), {}), (('x', 'm', False, 'mod'), {}),\n"
        "                        (('ClassVar[int]', 'm'), {'allow_special_forms': True}),\n"
        "                        ((None, 'm'), {}), ((list[int], 'm'), {})])\n"
        "ref = check('int', 'm', module='mod', allow_special_forms=True)\n"
        "refused = []\n"
        "for checker in (check, type_check):\n"
        "    try:\n"
        "        checker(typing.Generic, 'm')\n"
        "    except TypeError as err:\n"
        "        refused.append(str(err))\n"
        "print(len(calls) < 100, same, ref.__forward_module__, ref.__forward_is_class__,\n"
        "      len(refused) == 2 and refused[0] == refused[1], typing._type_check is type_check)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.split()) == (
        0,
        ["True", "True", "mod", "True", "True", "True"],
    ), out.stderr


def test_a_policy_pickled_where_it_lived_before_is_read() -> None:
    # Plans that older images pickled (a re-exec's hand-over) name the class
    # herdsman.core.lifecycle.Policy; protocol 0 spells a class as "module\nname".
    policy = Policy(restart="on-failure", burst=7)
    data = pickle.dumps(policy, protocol=0)
    assert b"herdsman.core.plan\nPolicy\n" in data
    older = data.replace(b"herdsman.core.plan\nPolicy\n", b"herdsman.core.lifecycle\nPolicy\n")
    assert pickle.loads(older) == policy


def test_a_helper_that_dies_without_answering_is_said_with_how_it_ended() -> None:
    # In a fresh interpreter: the helper is a fork, and a test process has threads.
    code = (
        "import os, signal\n"
        "import herdsman.config.plan as compiled\n"
        "from herdsman.runtime.planner import PlanError, receive_plan, request_plan\n"
        "compiled.answer = lambda config: os.kill(os.getpid(), signal.SIGKILL)\n"
        "try:\n"
        "    receive_plan(request_plan(None))\n"
        "except PlanError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "the config validator failed (exit code -9); see the error above"


def test_an_instance_plan_pickled_field_by_field_is_read() -> None:
    # Older images pickled instance plans with dataclasses' generic state (a list of
    # the fields); a re-exec from one hands such a plan over.
    inst = InstancePlan(
        "web.1", "web", 1, ("sleep", "1"), {"A": "1"}, Path("/"), umask=0o22, ready=CheckPlan("tcp")
    )

    class Older(pickle.Pickler):
        def reducer_override(self, obj: object) -> object:
            if type(obj) is InstancePlan:
                return copyreg.__newobj__, (InstancePlan,), obj.__getstate__()
            return NotImplemented

    out = io.BytesIO()
    Older(out, protocol=pickle.HIGHEST_PROTOCOL).dump(inst)
    assert pickle.loads(out.getvalue()) == inst
    assert pickle.loads(pickle.dumps(inst, protocol=pickle.HIGHEST_PROTOCOL)) == inst


def test_plans_pickle_their_fields_in_order_as_frozen_dataclasses_did() -> None:
    # Images of other releases (a re-exec's hand-over) write and read every plan
    # class's state as the list of its fields' values in order, which dataclasses
    # gives only a frozen class with slots; the plan's classes are not frozen.
    policy = Policy(restart="on-failure", burst=7)
    check = CheckPlan("tcp", "127.0.0.1:80", ("127.0.0.1", 80))
    for value in (policy, check):
        _, _, state, *_ = value.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
        assert state == [getattr(value, f.name) for f in fields(value)]
        assert pickle.loads(pickle.dumps(value, protocol=0)) == value
    # A plan of an image older than the fields added last has fewer values.
    older = copyreg.__newobj__(Policy)
    older.__setstate__(["never", 0.5])
    assert (older.restart, older.backoff_initial) == ("never", 0.5)


def test_plans_compare_and_show_by_their_fields_as_dataclasses_do() -> None:
    # __eq__ and __repr__ are _Fields' own, not generated per class (their source
    # text was 12M instructions before the fork): the same answers as dataclasses'.
    policy = Policy(restart="on-failure", burst=7)
    assert policy == Policy(restart="on-failure", burst=7)
    assert policy != Policy(restart="on-failure", burst=8)
    assert policy != CheckPlan("tcp")
    assert policy.__eq__(1) is NotImplemented
    check = CheckPlan("tcp", "h:1", ("h", 1))
    assert repr(check) == (
        "CheckPlan(kind='tcp', target='h:1', address=('h', 1), argv=(), interval=1.0,"
        " timeout=1.0, initial_delay=0.0, failure_threshold=1, success_threshold=1,"
        " watchdog=None, options={})"
    )
    with pytest.raises(TypeError, match="unhashable"):
        hash(policy)


def test_the_validator_is_imported_with_dataclass_methods_made_when_called() -> None:
    # pydantic's and annotated_types' dataclasses: every method is compiled from
    # its text on its first call, and then does what it always did. dataclasses
    # makes methods as before once the validator is imported.
    code = (
        "import dataclasses\n"
        "create_fn = dataclasses._create_fn\n"
        "from herdsman.runtime.planner import import_validator\n"
        "import_validator()\n"
        "from annotated_types import Gt\n"
        "from pydantic.types import Strict\n"
        "put_off = [m.__code__.co_filename != '<string>' for m in (Gt.__init__, Gt.__eq__)]\n"
        "gt = Gt(1)\n"
        "print(all(put_off), repr(gt), gt == Gt(1),"
        " gt != Gt(2), hash(gt) == hash(Gt(1)), Strict() == Strict(strict=True),"
        " dataclasses._create_fn is create_fn)\n"
        "try:\n"
        "    gt.gt = 2\n"
        "except dataclasses.FrozenInstanceError as err:\n"
        "    print(err)\n"
        "@dataclasses.dataclass\n"
        "class Later:\n"
        "    x: int\n"
        "print(Later.__eq__.__code__.co_filename)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == [
        "True Gt(gt=1) True True True True True",
        "cannot assign to field 'gt'",
        "<string>",
    ]


def test_a_put_off_init_answers_for_its_signature_as_the_one_made() -> None:
    # inspect, dataclasses (the docstring of a class without one) and pydantic read
    # an __init__'s signature: it is the made function's, which is made when the
    # signature is first read (or the __init__ called), not before.
    code = (
        "import dataclasses, inspect\n"
        "from herdsman.runtime.planner import _made_when_called\n"
        "create_fn = dataclasses._create_fn\n"
        "inits = []\n"
        "def counted(name, *args, **where):\n"
        "    inits.extend(['made'] if name == '__init__' else [])\n"
        "    return create_fn(name, *args, **where)\n"
        "def point(doc):\n"
        "    @dataclasses.dataclass(frozen=True, slots=True)\n"
        "    class Point:\n"
        "        __doc__ = doc\n"
        "        x: int\n"
        "        label: 'str' = 'a'\n"
        "        tags: tuple = dataclasses.field(default_factory=tuple)\n"
        "        _: dataclasses.KW_ONLY\n"
        "        weight: float = 1.0\n"
        "    return Point\n"
        "dataclasses._create_fn = _made_when_called(counted)\n"
        "Documented, Bare = point('A point.'), point(None)\n"
        "dataclasses._create_fn = create_fn\n"
        "Made = point(None)\n"
        "made = [len(inits)]\n"
        "same = [Bare.__doc__ == Made.__doc__,\n"
        "        inspect.signature(Documented) == inspect.signature(Made),\n"
        "        repr(inspect.signature(Documented.__init__)) == repr(inspect.signature(Made.__init__)),\n"
        "        inspect.getfullargspec(Bare.__init__) == inspect.getfullargspec(Made.__init__)]\n"
        "made.append(len(inits))\n"
        "point = Documented(1, weight=2)\n"
        "made.append(len(inits))\n"
        "print(made, all(same), (point.x, point.label, point.tags, point.weight))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, "[1, 2, 2] True (1, 'a', (), 2)"), out.stderr
