"""The Lua scripts (store/lua/<name>.lua) for the steps that must be atomic on the server, and the one way to call them.

Each file starts with a header of comment lines; among its free text:

    -- KEYS: stream run runs               the script's KEYS, in order (nothing after the colon: no keys)
    -- ARGV: budget now run_id fields...   its ARGV, in order; further `-- ARGV:` lines continue the list
    -- include: send                       (optional) send.lua, callable here as `send(KEYS, ARGV)`
    -- lib: skip_wrongtype                 (optional) lua/lib/skip_wrongtype.lua's code, ahead of the body: helpers
                                           that are not scripts of their own (no KEYS, ARGV or call site)

A name ending in `...` (the last ARGV name only) is a variadic tail: any number of values. The loader puts on
line 1 a `local` per name (`local stream, run = KEYS[1], KEYS[2]`; a tail's local is the ARGV index of its first
value: `unpack(ARGV, fields)`), so bodies never index KEYS, and index ARGV only past a tail. Hash fields and
statuses are written as core/schema.py names them (`EXEC.status`, `STATUS.queued`; see its docstring): the loader
replaces each with the schema's value as a Lua string ('status'), and refuses a name the schema lacks. Comment
lines are sent empty, so the line numbers of Redis errors are the file's (counted from the end of the included
functions, in a script with includes). An including script may hand an included one a Lua value (a table) after
KEYS and ARGV, `f(KEYS, ARGV, value)`, which its body reads as HANDED (nil when a client runs it). Each script's
SHA1 is computed with hashlib: loading needs no Redis client.

`SCRIPT.bind(name=value, ...)` takes every KEYS and ARGV name as a keyword argument, exactly (TypeError
otherwise), and builds the KEYS and ARGV lists: callers never index by position, and tests/store checks every
call site against the headers. A bound call runs one way, EVALSHA on a Link (loading the script on NOSCRIPT, e.g.
after a restart): alone (`run`) or after a pipeline's commands in the same round trip (`run_after`). Inside a
MULTI (`queue`) it is EVAL with the text instead: there a NOSCRIPT would fail that command alone while the rest
of the transaction went through, and redis-py's EVALSHA pipelines cost a SCRIPT EXISTS round trip per batch.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import redis
from redis.client import Pipeline

from angora_rq.core.errors import AngoraError
from angora_rq.core.schema import LUA
from angora_rq.store.link import Link, borrowed, evalsha

LUA_DIR = Path(__file__).with_name("lua")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# A body's `local x`, `local function x` and `for x, y in`: none may hide a KEYS or ARGV name (a local `runs` made
# an included PUBLISH, called with `runs` as a key, get a table instead).
DECLARED = re.compile(r"\b(?:local\s+(?:function\s+)?|for\s+)([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)")
FIELD_REF = re.compile(r"\b(" + "|".join(LUA) + r")\.([A-Za-z_][A-Za-z0-9_]*)")
# Lua's keywords and the globals scripts use: no header name may hide one.
RESERVED = frozenset("""and break do else elseif end false for function if in local nil not or repeat return then
    true until while KEYS ARGV redis unpack tonumber tostring type pairs ipairs math string table cjson cmsgpack
    bit struct select next error pcall HANDED""".split()) | frozenset(LUA)


@dataclass(frozen=True)
class Script:
    """One loaded script: the text Redis runs, its SHA1 and the names of its KEYS and ARGV."""

    name: str
    text: str
    sha: str
    keys: tuple[str, ...]
    argv: tuple[str, ...]  # the tail's name excluded
    tail: Optional[str]  # the variadic ARGV tail's name
    names: frozenset[str]

    def bind(self, **kw: Any) -> Bound:
        """KEYS and ARGV from keyword arguments named as in the header (a tail takes a list or tuple)."""
        if kw.keys() != self.names:
            raise TypeError(f"script {self.name}: missing {sorted(self.names - kw.keys())}, "
                            f"unexpected {sorted(kw.keys() - self.names)}")
        args = [kw[n] for n in self.argv]
        if self.tail is not None:
            tail = kw[self.tail]
            if not isinstance(tail, (list, tuple)):
                raise TypeError(f"script {self.name}: {self.tail}... takes a list or tuple, not {type(tail).__name__}")
            args += tail
        return Bound(self, [kw[n] for n in self.keys], args)


@dataclass(frozen=True)
class Bound:
    """A script with its KEYS and ARGV, ready to run."""

    script: Script
    keys: list[Any]
    args: list[Any]

    def named(self) -> dict[str, Any]:
        """The call's values by their header names (a tail's as a list): for a script that includes this one."""
        names = dict(zip(self.script.keys, self.keys))
        names.update(zip(self.script.argv, self.args))
        if self.script.tail is not None:
            names[self.script.tail] = self.args[len(self.script.argv):]
        return names

    def run(self, link: Link) -> Any:
        """EVALSHA on `link` (loading the script once if the server does not know it); the raw reply."""
        return link.script(self.script, self.keys, self.args)

    def run_borrowed(self, r: redis.Redis) -> Any:
        """run() on this thread's Link on `r`'s pool, given back after unless the thread held it (link.borrowed)."""
        with borrowed(r) as link:
            return self.run(link)

    def run_after(self, link: Link, pipe: Pipeline,
                  before: Sequence[Sequence[Any]] = ()) -> tuple[Optional[list[Any]], Any]:
        """Run what `pipe` queued (MULTI/EXEC if transactional), then this script, in one round trip.

        Returns the pipeline's replies (None when `before`, Link.execute_then's, aborted the transaction) and the
        script's reply. The script runs whatever the pipeline's fate; a NOSCRIPT costs one more round trip (the
        script is loaded and run again).
        """
        replies, reply = link.execute_then(pipe, evalsha(self.script, self.keys, self.args), before)
        if isinstance(reply, redis.exceptions.NoScriptError):
            reply = self.run(link)
        elif isinstance(reply, Exception):
            raise reply
        return replies, reply

    def queue(self, pipe: Pipeline) -> None:
        """Queue this call on a pipeline (inside its MULTI), as EVAL."""
        pipe.execute_command(*self.eval_command())

    def eval_command(self) -> tuple[Any, ...]:
        """This call as an EVAL command with the script's text, for a round trip where a NOSCRIPT would go
        unnoticed (inside a MULTI, or ahead of one: Link.execute_then's `before`)."""
        return ("EVAL", self.script.text, len(self.keys), *self.keys, *self.args)


def run_both(link: Link, first: Bound, second: Bound) -> tuple[Any, Any]:
    """Two scripts in one round trip (EVALSHA each, in order): their replies, an error reply raised. One the server
    did not know (NOSCRIPT: it did not run) is loaded and run again, in the same order."""
    replies, _ = run_each(link, [first, second])
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies[0], replies[1]


def run_each(link: Link, calls: Sequence[Bound], then: Optional[Sequence[Any]] = None) -> tuple[list[Any], Any]:
    """Scripts in one round trip (EVALSHA each, in order), then one more command (a WAIT) if given: each script's
    reply and the command's, error replies returned in their place. Those the server did not know (NOSCRIPT: they
    did not run) are loaded and run again, in order, and then the command again: a WAIT must follow what ran last."""
    replies = link.calls([evalsha(c.script, c.keys, c.args) for c in calls] + ([then] if then else []))
    after = replies.pop() if then else None
    again = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
    for i in again:
        try:
            replies[i] = calls[i].run(link)
        except redis.exceptions.ResponseError as e:
            replies[i] = e
    if again and then:
        after = link.calls([then])[0]
    return replies, after


def field_pairs(mapping: Mapping[str, Any]) -> list[Any]:
    """A mapping as the field, value, field, value... list a script's tail takes."""
    return [x for kv in mapping.items() for x in kv]


class ScriptError(AngoraError):
    """Raised when a Lua script's header or body breaks the rules above (at load time)."""


def load_library(directory: Path = LUA_DIR) -> dict[str, Script]:
    """Every `<name>.lua` of `directory`, loaded, by name (the helpers of its `lib/` folder go into those that
    ask for them)."""
    sources = {p.stem: p.read_text() for p in sorted(directory.glob("*.lua"))}
    libs = {p.stem: p.read_text() for p in sorted((directory / "lib").glob("*.lua"))}
    return {name: _compile(name, sources, (), libs=libs) for name in sources}


def _compile(name: str, sources: dict[str, str], including: tuple[str, ...], inside: bool = False,
             libs: Optional[dict[str, str]] = None) -> Script:
    """`name`.lua as Redis runs it; `inside`: as the body of a function another script includes (HANDED is then
    its third parameter, not a local). `libs`: the helpers a script may ask for (`-- lib:`), by name."""
    if name in including:
        raise ScriptError(f"{name}.lua: includes itself through {' -> '.join(including)}")
    if name not in sources:
        raise ScriptError(f"{including[-1]}.lua: includes {name}.lua, which does not exist")
    lines = sources[name].split("\n")
    keys, argv, tail, includes, wanted = _header(name, lines)
    body = ["" if line.lstrip().startswith("--") else line for line in lines]
    code = "\n".join(body)
    if "KEYS[" in code or ("ARGV[" in code and tail is None):
        raise ScriptError(f"{name}.lua: index KEYS and ARGV through the header's names, not by position")
    names = {*keys, *argv, *([tail] if tail else [])}
    _no_hidden_names(name, code, names)
    helpers = [_lib(name, lib, libs or {}, names) for lib in wanted]
    inner = [(inc, _compile(inc, sources, (*including, name), inside=True, libs=libs).text) for inc in includes]
    functions = [f"local function {inc}(KEYS, ARGV, HANDED)\n{text}\nend " for inc, text in inner]
    handed = "local HANDED = nil; " if "HANDED" in code and not inside else ""
    # The preamble first: a helper may read the script's names; its lines go after line 1 (error line numbers in
    # such a script are counted from the end of its helpers).
    body[0] = "".join(functions) + handed + _preamble(keys, argv, tail) + "".join(helpers)
    text = FIELD_REF.sub(lambda m: _schema_name(name, m.group(1), m.group(2)), "\n".join(body))
    return Script(name, text, hashlib.sha1(text.encode()).hexdigest(), keys, argv, tail,
                  frozenset((*keys, *argv, *([tail] if tail else []))))


def _lib(script: str, lib: str, libs: dict[str, str], names: set[str]) -> str:
    """lua/lib/`lib`.lua's code for `script` (its comment lines sent empty), on lines of its own."""
    if lib not in libs:
        raise ScriptError(f"{script}.lua: asks for lib/{lib}.lua, which does not exist")
    code = "\n".join("" if line.lstrip().startswith("--") else line for line in libs[lib].split("\n"))
    _no_hidden_names(f"lib/{lib}", code, names)
    return "\n" + code + "\n"


def _no_hidden_names(name: str, code: str, names: set[str]) -> None:
    """Refuse a body whose local (or loop variable) has the name of one of its KEYS or ARGV."""
    code = re.sub(r"--[^\n]*", "", code)
    for m in DECLARED.finditer(code):
        for n in re.split(r"\s*,\s*", m.group(1)):
            if n in names:
                line = code.count("\n", 0, m.start()) + 1
                raise ScriptError(f"{name}.lua:{line}: the local {n!r} hides the KEYS or ARGV value of that name")


def _header(name: str, lines: list[str]
            ) -> tuple[tuple[str, ...], tuple[str, ...], Optional[str], list[str], list[str]]:
    """KEYS names, ARGV names, the tail's name, the includes and the libs declared by the leading comment lines."""
    keys: Optional[list[str]] = None
    argv: Optional[list[str]] = None
    includes: list[str] = []
    wanted: list[str] = []
    for line in lines:
        if not line.startswith("--"):
            break
        label, colon, rest = line[2:].strip().partition(":")
        if not colon:
            continue
        if label == "KEYS":
            if keys is not None:
                raise ScriptError(f"{name}.lua: more than one KEYS line")
            keys = rest.split()
        elif label == "ARGV":
            argv = (argv or []) + rest.split()
        elif label == "include":
            includes += rest.split()
        elif label == "lib":
            wanted += rest.split()
    if keys is None or argv is None:
        raise ScriptError(f"{name}.lua: the header must name its KEYS and ARGV (`-- KEYS: ...`, `-- ARGV: ...`)")
    tail = argv.pop()[:-3] if argv and argv[-1].endswith("...") else None
    names = [*keys, *argv, *([tail] if tail else [])]
    for n in names:
        if not NAME.match(n) or n in RESERVED or n in includes:
            raise ScriptError(f"{name}.lua: {n!r} cannot name a KEYS or ARGV value (a variadic tail comes last)")
    if len(set(names)) != len(names):
        raise ScriptError(f"{name}.lua: a name appears twice in KEYS and ARGV")
    return tuple(keys), tuple(argv), tail, includes, wanted


def _preamble(keys: Sequence[str], argv: Sequence[str], tail: Optional[str]) -> str:
    """One line of Lua binding the header's names to KEYS and ARGV."""
    out = []
    for names, array in ((keys, "KEYS"), (argv, "ARGV")):
        if names:
            out.append(f"local {', '.join(names)} = {', '.join(f'{array}[{i}]' for i in range(1, len(names) + 1))}")
    if tail:
        out.append(f"local {tail} = {len(argv) + 1}")
    return "; ".join(out) + " " if out else ""


def _schema_name(script: str, namespace: str, attr: str) -> str:
    """`EXEC.status` as the Lua string literal of the schema's value ('status')."""
    value = LUA[namespace].fields().get(attr)
    if value is None:
        raise ScriptError(f"{script}.lua: core/schema.py has no {namespace}.{attr}")
    if not re.fullmatch(r"[A-Za-z0-9_:.-]+", value):
        raise ScriptError(f"core/schema.py: {namespace}.{attr} = {value!r} is not a plain name")
    return f"'{value}'"


LIBRARY = load_library()
ACQUIRE = LIBRARY["acquire"]
CLAIM = LIBRARY["claim"]
CREATE = LIBRARY["create"]
DECIDE = LIBRARY["decide"]
DISPATCH = LIBRARY["dispatch"]
NOTE_LATE = LIBRARY["note_late"]
DROP_RUNS = LIBRARY["drop_runs"]
DROP_VERSIONS = LIBRARY["drop_versions"]
FINISH = LIBRARY["finish"]
HAND_BACK = LIBRARY["hand_back"]
LEAVE_INFLIGHT = LIBRARY["leave_inflight"]
PROMOTE = LIBRARY["promote"]
PUBLISH = LIBRARY["publish"]
READ_RUNS = LIBRARY["read_runs"]
DEAD_LETTER = LIBRARY["dead_letter"]
RECORD = LIBRARY["record"]
REAP = LIBRARY["reap"]
RELEASE = LIBRARY["release"]
RENEW = LIBRARY["renew"]
RESIGN = LIBRARY["resign"]
RESUME = LIBRARY["resume"]
SEND = LIBRARY["send"]
SEND_DISPATCH = LIBRARY["send_dispatch"]
SET_PLAN = LIBRARY["set_plan"]
RUN_END = LIBRARY["run_end"]
RUN_COUNT = LIBRARY["run_count"]
TICK = LIBRARY["tick"]
RUN_STATES = LIBRARY["run_states"]
SETTLE_REPLAYED = LIBRARY["settle_replayed"]
SETTLE_RUNS = LIBRARY["settle_runs"]
STILL_OURS = LIBRARY["still_ours"]
