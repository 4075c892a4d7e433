"""Bounds on what a config file can make herdsman read, build and walk.

A config is input, sometimes from someone else: a small file must not be able to
exhaust memory or the stack of `check`. YAML aliases share one node between many
places, so the tree they describe can be exponentially larger than the file (an
"alias bomb"); everything downstream (the line locator, interpolation, validation)
walks that tree, so it is measured first, on the shared graph, in time linear in the
file. Imports no pydantic or yaml, so client commands can use it cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from herdsman.config.errors import Loc

# Far above any real config (a 2,000-service file is a few hundred KB).
MAX_FILE_BYTES = 4 * 1024 * 1024
# The deepest key a config has is about 6 levels (services.web.ready.http...);
# plugin options may nest more, but not this much.
MAX_DEPTH = 32
# What YAML aliases may add to the file's values once every alias is replaced by the
# subtree it names; merges (`<<: *base`) of a few dozen services stay far below.
MAX_ALIAS_VALUES = 100_000

TOO_DEEP = f"is nested more than {MAX_DEPTH} levels deep"

Node = TypeVar("Node")
Children = Callable[[Node], Sequence[tuple[str | int, Node]]]


def first_problem(
    root: Node, children: Children[Node], problem: Callable[[Node], str | None] | None = None
) -> tuple[Loc, str] | None:
    """The first place in the tree at `root` that breaks a bound, and a sentence why.

    `children` lists a node's keys or indexes with their child nodes. A container
    reached twice (through a YAML alias) is walked once: its size and height are
    remembered, so the cost is that of the file, not of the tree it expands to.
    `problem` checks each node for anything else (a NUL byte).
    """
    size: dict[int, int] = {}  # of each container walked: its values once expanded
    height: dict[int, int] = {}
    written = 0  # values in the file: containers once, leaves (never shared) each time
    on_path: set[int] = set()
    # container, its path, its children, the next child to walk
    stack: list[tuple[Node, Loc, Sequence[tuple[str | int, Node]], int]] = []
    todo: tuple[Node, Loc] | None = (root, ())
    while todo is not None or stack:
        if todo is not None:
            node, loc = todo
            todo = None
            found = None if problem is None else problem(node)
            if found is not None:
                return loc, found
            written += 1
            kids = children(node)
            if kids:
                stack.append((node, loc, kids, 0))
                on_path.add(id(node))
            elif not stack:
                return None  # a document that is one value
            continue
        node, loc, kids, index = stack[-1]
        while index < len(kids):
            key, child = kids[index]
            index += 1
            child_loc = (*loc, key)
            if id(child) in on_path:
                return child_loc, "refers to itself through an alias"
            if id(child) in size:
                if len(child_loc) + height[id(child)] > MAX_DEPTH:
                    return child_loc, TOO_DEEP
                continue
            if len(child_loc) > MAX_DEPTH:
                return child_loc, TOO_DEEP
            if children(child):
                stack[-1] = (node, loc, kids, index)
                todo = (child, child_loc)
                break
            found = None if problem is None else problem(child)
            if found is not None:
                return child_loc, found
            written += 1
        else:
            stack.pop()
            on_path.discard(id(node))
            size[id(node)] = 1 + sum(size.get(id(child), 1) for _, child in kids)
            height[id(node)] = max((height.get(id(child), 0) + 1 for _, child in kids))
    total = size[id(root)]
    if total - written > MAX_ALIAS_VALUES:
        return _where_aliases_add(root, children, size), (
            f"YAML aliases expand this to {total:,} values, {total - written:,} more than"
            f" are written (at most {MAX_ALIAS_VALUES:,} may come from aliases)"
        )
    return None


def _where_aliases_add(root: Node, children: Children[Node], size: dict[int, int]) -> Loc:
    """The key whose value grows past the budget: follow the largest child down while
    it alone is too large, then name the nearest key (an alias inside a list has no
    position of its own worth showing)."""
    loc: Loc = ()
    node = root
    while True:
        kids = children(node)
        if not kids:
            break
        key, child = max(kids, key=lambda kid: size.get(id(kid[1]), 1))
        if size.get(id(child), 1) <= MAX_ALIAS_VALUES:
            break
        loc, node = (*loc, key), child
    while loc and isinstance(loc[-1], int):
        loc = loc[:-1]
    return loc


def data_children(value: object) -> Sequence[tuple[str | int, object]]:
    """The children of parsed data (dicts and lists), for `first_problem`."""
    if isinstance(value, dict):
        return [(str(key), item) for key, item in value.items()]
    if isinstance(value, list):
        return list(enumerate(value))
    return ()


def nul_byte(value: object) -> str | None:
    """No command, path, argument or environment variable can hold a NUL byte."""
    if isinstance(value, str) and "\0" in value:
        return "contains a NUL byte, which no command, path or environment variable can hold"
    if isinstance(value, dict) and any(isinstance(key, str) and "\0" in key for key in value):
        return "has a key with a NUL byte in it"
    return None
