"""Safe, bounded YAML composition and node helpers for the definitions loader (pure: no I/O)."""
from __future__ import annotations

import difflib
import re
import shlex
from typing import Any, Callable, Iterator, Optional, Protocol, Union

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from angora_rq.core.errors import AngoraError
from angora_rq.core.settings import parse_seconds

MAX_BYTES = 1024 * 1024
MAX_NODES = 100_000  # counted with every alias expanded, so an alias bomb stops here
MAX_DEPTH = 50
TOO_BIG = f"file is larger than {MAX_BYTES // 1024 // 1024} MiB; split it into several files"

_YAML = "tag:yaml.org,2002:"
# The only tags definitions use; safe_load also knows binary/set/omap/pairs, which no field can hold.
SCALAR_KINDS = {_YAML + "str": "str", _YAML + "int": "int", _YAML + "float": "float", _YAML + "bool": "bool",
                _YAML + "null": "null", _YAML + "timestamp": "date",
                # '=' and '<<' as values resolve to these; safe_load chokes on them, plain text is kinder.
                _YAML + "value": "str", _YAML + "merge": "str"}
KIND_WORDS = {"str": "a string", "int": "a number", "float": "a number", "bool": "a boolean",
              "null": "empty (null)", "date": "a date", "list": "a list", "map": "a map", "bad": "a tagged value"}
MERGE = _YAML + "merge"

Pair = tuple[str, ScalarNode, Node]  # key text, key node, value node
NodeProblem = tuple[Node, str]


class NodeError(AngoraError):
    """Raised when YAML text cannot be composed safely; `line` and `col` are 1-based."""

    def __init__(self, message: str, line: int, col: int) -> None:
        super().__init__(message)
        self.line = line
        self.col = col


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts nodes (aliases expanded) and nesting depth as it goes."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.expanded = 0
        self.sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded

    def compose_node(self, parent: Optional[Node], index: Any) -> Optional[Node]:
        """Compose one node, refusing it when the document grows too deep or too large."""
        if self.check_event(AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            if node is None or id(node) not in self.sizes:
                raise NodeError("an alias refers to a node that contains it (recursive alias)", *_pos(mark))
            self._count(self.sizes[id(node)], mark)
            return node
        mark = self.peek_event().start_mark
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise NodeError(f"nesting is deeper than {MAX_DEPTH} levels", *_pos(mark))
        before = self.expanded
        node = super().compose_node(parent, index)
        assert node is not None  # the event is a scalar, sequence or mapping start
        self._count(1, mark)
        self.sizes[id(node)] = self.expanded - before
        self.depth -= 1
        return node

    def _count(self, n: int, mark: yaml.Mark) -> None:
        """Add `n` values to the expanded size; refuse the document past MAX_NODES."""
        self.expanded += n
        if self.expanded > MAX_NODES:
            raise NodeError(f"the document has more than {MAX_NODES} values once aliases are expanded "
                            "(an alias bomb?)", *_pos(mark))


def _pos(mark: yaml.Mark) -> tuple[int, int]:
    """A PyYAML mark as a 1-based (line, column)."""
    return mark.line + 1, mark.column + 1


def where(node: Node) -> tuple[int, int]:
    """The 1-based line and column where `node` starts."""
    return _pos(node.start_mark)


def compose(text: str) -> Optional[Node]:
    """Compose `text` into a node tree with safe_load's tag resolution; None for an empty document.

    libyaml's parser (C) composes the same tree ~20x faster; any error or a document near the bounds is composed
    again by the pure-Python bounded loader, whose messages and positions are the ones users see.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise NodeError(TOO_BIG, 1, 1)
    if getattr(yaml, "__with_libyaml__", False):
        try:
            node: Optional[Node] = yaml.compose(text, Loader=yaml.CSafeLoader)
        except (yaml.YAMLError, ValueError):
            node = None
        else:
            # Without an anchor ('&') there can be no alias: the tree is as big as it looks.
            check = _tree_within_bounds if "&" not in text else _well_within_bounds
            if node is None or check(node):
                return node
    return _compose_bounded(text)


def _well_within_bounds(root: Node) -> bool:
    """True when the tree (aliases expanded) is clearly under MAX_NODES and MAX_DEPTH, and has no cycle."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, depth)
    stack: list[tuple[Node, bool]] = [(root, False)]
    open_ids: set[int] = set()
    while stack:
        node, done = stack.pop()
        if done:
            kids = [sizes[id(k)] for k in _children(node)]
            sizes[id(node)] = (1 + sum(k[0] for k in kids), 1 + max((k[1] for k in kids), default=0))
            open_ids.discard(id(node))
            if sizes[id(node)][0] > MAX_NODES * 0.9 or sizes[id(node)][1] > MAX_DEPTH - 2:
                return False
            continue
        if id(node) in sizes:
            continue
        if isinstance(node, ScalarNode) and node.value == "" and node.tag == _YAML + "null":
            return False  # libyaml marks an empty value one column later than PyYAML: keep PyYAML's positions
        if id(node) in open_ids:
            return False  # a recursive alias: let the bounded loader report it
        open_ids.add(id(node))
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in sizes)
    return True


def _tree_within_bounds(root: Node) -> bool:
    """`_well_within_bounds` for a document without anchors: count nodes and depth in one pass."""
    count, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH - 2 or count > MAX_NODES * 0.9:
            return False
        if isinstance(node, ScalarNode):
            if node.value == "" and node.tag == _YAML + "null":
                return False  # libyaml marks an empty value one column later than PyYAML: keep PyYAML's positions
        else:
            stack.extend((k, depth + 1) for k in _children(node))
    return True


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [x for pair in node.value for x in pair]
    return []


def _compose_bounded(text: str) -> Optional[Node]:
    """The pure-Python composer that counts nodes and depth as it goes (exact errors and positions)."""
    try:
        loader = _BoundedLoader(text)  # the reader refuses control characters right here
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise NodeError(f"character #x{e.character:04x} is not allowed in YAML", line, col) from None
    try:
        node: Optional[Node] = loader.get_single_node()
        return node
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = _pos(mark) if mark else (1, 1)
        raise NodeError(_syntax_message(e), line, col) from None
    finally:
        loader.dispose()


def _syntax_message(e: yaml.MarkedYAMLError) -> str:
    """A one-line YAML error text, with a hint for the usual culprits."""
    text = " ".join(x for x in (e.context, e.problem) if x)
    if "'\\t'" in text:
        text += " (tabs cannot indent YAML; use spaces)"
    elif "expected a single document" in text:
        text += " (a file holds one list; remove the '---')"
    elif "while scanning an alias" in text:
        text += " (a value starting with '*' must be quoted, e.g. cron: \"*/5 * * * *\")"
    return f"YAML syntax error: {text}"


def tag_name(node: Node) -> str:
    """The tag as written: '!!python/name:x' for YAML's own namespace, else verbatim."""
    return "!!" + node.tag[len(_YAML):] if node.tag.startswith(_YAML) else node.tag


def kind(node: Node) -> str:
    """What a node is: str int float bool null date list map, or 'bad' for a tag definitions do not allow."""
    if isinstance(node, ScalarNode):
        return SCALAR_KINDS.get(node.tag, "bad")
    if isinstance(node, SequenceNode):
        return "list" if node.tag == _YAML + "seq" else "bad"
    if isinstance(node, MappingNode):
        return "map" if node.tag == _YAML + "map" else "bad"
    return "bad"


def bad_tag_message(node: Node) -> str:
    """Why a node with a disallowed tag is refused."""
    return (f"tag {tag_name(node)!r} is not allowed: definitions are plain YAML "
            "(strings, numbers, booleans, lists and maps)")


_SAFE = yaml.SafeLoader("")  # only its scalar constructors are used: pure functions of the node text


def scalar(node: Node) -> Union[str, int, float, bool, None]:
    """The Python value of a scalar the way safe_load builds it; ValueError when the text is not valid."""
    k = kind(node)
    if k in ("str", "date") or not isinstance(node, ScalarNode):
        return str(node.value)  # dates are never constructed: PyYAML crashes on 2024-13-45
    try:
        if k == "int":
            return int(_SAFE.construct_yaml_int(node))
        if k == "float":
            return float(_SAFE.construct_yaml_float(node))
        if k == "bool":
            return bool(_SAFE.construct_yaml_bool(node))
    except (ValueError, KeyError, OverflowError, IndexError):
        # e.g. '0b_' resolves as an int that int() refuses, '!!bool maybe' is no boolean, '!!int' of an empty
        # text makes PyYAML index past its end
        raise ValueError(f"{node.value!r} is not a valid {k}") from None
    return None


def pairs(node: MappingNode) -> tuple[list[Pair], list[NodeProblem]]:
    """The (key, key node, value node) pairs of a map with '<<' merges applied, and its problems."""
    out: list[Pair] = []
    problems: list[NodeProblem] = []
    seen: dict[str, ScalarNode] = {}
    merged: list[Pair] = []
    for key_node, value in node.value:
        if key_node.tag == MERGE and isinstance(key_node, ScalarNode):
            merged.extend(_merge_source(value, problems))
            continue
        if not isinstance(key_node, ScalarNode) or kind(key_node) in ("bad", "null"):
            problems.append((key_node, "a key must be a plain string"))
            continue
        key = str(key_node.value)
        if key in seen:
            line, col = where(seen[key])
            problems.append((key_node, f"duplicate key {key!r} (first at line {line}, column {col}); "
                                       "YAML would silently keep only the last one"))
            continue
        seen[key] = key_node
        out.append((key, key_node, value))
    # Merged keys are defaults: an explicit key wins, and the first merged source wins among sources.
    for key, key_node, value in merged:
        if key not in seen:
            seen[key] = key_node
            out.append((key, key_node, value))
    return out, problems


def _merge_source(value: Node, problems: list[NodeProblem]) -> list[Pair]:
    """The pairs a '<<' key brings in: one map, or a list of maps."""
    sources = value.value if isinstance(value, SequenceNode) else [value]
    out: list[Pair] = []
    for src in sources:
        if not isinstance(src, MappingNode) or kind(src) != "map":
            problems.append((src, "'<<' merges only a map or a list of maps"))
            continue
        got, sub_problems = pairs(src)
        problems.extend(sub_problems)
        out.extend(got)
    return out


def walk(node: Node) -> Iterator[Node]:
    """Every distinct node under `node` (a node shared through aliases is yielded once)."""
    seen: set[int] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        yield n
        if isinstance(n, SequenceNode):
            stack.extend(reversed(n.value))
        elif isinstance(n, MappingNode):
            for k, v in reversed(n.value):
                stack.extend((v, k))


# -- typed readers: (reporter, key, node) -> value, or INVALID once the problem is reported -------------

INVALID: Any = object()
Check = Callable[[str], Optional[str]]  # what is wrong with a string, or None
TEXT_KINDS = ("str", "int", "float", "bool", "date")  # scalars usable as text (argv items, env/param values)


class Reporter(Protocol):
    """Whoever records problems for the entry being read."""

    def fail(self, node: Node, message: str) -> Any:
        """Record an error at `node`; return INVALID."""


def short(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def expect(e: Reporter, subject: str, node: Node, kinds: tuple[str, ...], what: str) -> bool:
    """True if `node` is one of `kinds`; otherwise record `subject must be what, not ...`."""
    k = kind(node)
    if k in kinds:
        return True
    hint = ""
    if "str" in kinds and k in TEXT_KINDS:  # YAML read `123`, `yes` or `2024-01-01` as a non-string
        hint = f' (put it in quotes if you mean the text "{short(node.value)}")'
    e.fail(node, f"{subject} must be {what}, not {KIND_WORDS[k]}{hint}")
    return False


def text(e: Reporter, key: str, node: Node) -> Any:
    """A string without NUL characters."""
    if not expect(e, repr(key), node, ("str",), "a string"):
        return INVALID
    if "\x00" in node.value:
        return e.fail(node, f"{key!r} contains a NUL character")
    return str(node.value)


def boolean(e: Reporter, key: str, node: Node) -> Any:
    """true or false (a quoted "true" is a string, not a boolean)."""
    if not expect(e, repr(key), node, ("bool",), "true or false"):
        return INVALID
    try:
        return scalar(node)
    except ValueError as err:  # '!!bool maybe'
        return e.fail(node, f"{key!r}: {err}")


def integer(e: Reporter, key: str, node: Node, minimum: int, what: str) -> Any:
    """A whole number >= `minimum` (a boolean is not a number here, unlike in Python)."""
    if not expect(e, repr(key), node, ("int",), what):
        return INVALID
    try:
        value = scalar(node)
    except ValueError as err:
        return e.fail(node, f"{key!r}: {err}")
    assert isinstance(value, int)
    return value if value >= minimum else e.fail(node, f"{key!r} must be {what}, not {value}")


def duration(e: Reporter, key: str, node: Node, positive: bool) -> Any:
    """Seconds from a number or `30s`/`5m`/`2h`/`1d`; > 0 when `positive`, else >= 0."""
    if not expect(e, repr(key), node, ("int", "float", "str"), "a duration (seconds, or 30s, 5m, 2h)"):
        return INVALID
    try:
        value = scalar(node)
        assert isinstance(value, (str, int, float))
        seconds = parse_seconds(value)
    except (ValueError, OverflowError) as err:
        return e.fail(node, f"{key!r}: {err}")
    if positive and seconds <= 0:
        return e.fail(node, f"{key!r} must be more than 0 seconds")
    return seconds


def text_map(e: Reporter, key: str, node: Node, names: re.Pattern[str], rule: str, limit: int) -> Any:
    """A NAME: value map; scalar values keep their text as written (`0755` stays "0755", `yes` "yes")."""
    if not expect(e, repr(key), node, ("map",), "a map of NAME: value"):
        return INVALID
    assert isinstance(node, MappingNode)
    items, problems = pairs(node)
    for bad, message in problems:
        e.fail(bad, message)
    out: dict[str, str] = {}
    for name, key_node, value in items:
        if not names.match(name):
            e.fail(key_node, f"{key} name {short(name)!r} is not valid ({rule})")
        elif kind(value) == "null":
            e.fail(value, f"{key} {name!r} has no value (write \"\" for an empty string)")
        elif expect(e, f"{key} {name!r}", value, TEXT_KINDS, "a string"):
            if "\x00" in value.value or len(value.value) > limit:
                e.fail(value, f"{key} {name!r} contains a NUL character or is longer than {limit} characters")
            else:
                out[name] = str(value.value)
    return out if len(out) == len(items) and not problems else INVALID


def choice(e: Reporter, key: str, node: Node, choices: tuple[str, ...]) -> Any:
    """One of `choices`, with a did-you-mean hint."""
    value = text(e, key, node)
    if value is INVALID or value in choices:
        return value
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return e.fail(node, f"{key!r} must be one of {', '.join(choices)}, not {short(value)!r}{hint}")


def checked(e: Reporter, key: str, node: Node, check: Check) -> Any:
    """A string that passes `check` (whose answer completes the sentence "'key' ...")."""
    value = text(e, key, node)
    problem = check(value) if value is not INVALID else None
    return e.fail(node, f"{key!r} {problem}") if problem else value


def string_list(e: Reporter, key: str, node: Node, check: Check, required: bool) -> Any:
    """A list of strings, each passing `check` (whose answer is a whole sentence); a bare string gets a hint."""
    if kind(node) == "str":
        return e.fail(node, f"{key!r} must be a list, not a string (write: {key}: [{short(node.value)}])")
    if not expect(e, repr(key), node, ("list",), "a list"):
        return INVALID
    if required and not node.value:
        return e.fail(node, f"{key!r} must not be empty")
    ok = True
    for item in node.value:
        problem = check(item.value) if expect(e, f"each item of {key!r}", item, ("str",), "a string") else ""
        if problem:
            e.fail(item, problem)
        ok = ok and problem is None  # "" = already reported by expect
    return tuple(str(item.value) for item in node.value) if ok else INVALID


def argv(e: Reporter, key: str, node: Node) -> Any:
    """A command: a line split like a POSIX shell (quotes, no $VAR expansion), or a list of strings."""
    k = kind(node)
    if k == "str":
        try:
            words = shlex.split(node.value, posix=True)
        except ValueError as err:
            return e.fail(node, f"{key!r} cannot be split like a shell line: {err} (check the quotes)")
    elif k == "list":
        # items are text: `[sleep, 5]` means "5", so scalars keep the text as written
        if not all(expect(e, f"each item of {key!r}", i, TEXT_KINDS, "a string") for i in node.value):
            return INVALID
        words = [str(i.value) for i in node.value]
    else:
        return e.fail(node, f"{key!r} must be a string or a list of strings, not {KIND_WORDS[k]}")
    if not words:
        return e.fail(node, f"{key!r} is empty")
    if any("\x00" in w for w in words):
        return e.fail(node, f"{key!r} contains a NUL character")
    return tuple(words)


def unknown_key(key: str, known: list[str]) -> str:
    """The unknown-key message, with the closest known key as a hint."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(known)
    return f"unknown key {short(key)!r} ({hint})"
