"""Job and schedule definitions: parse and validate YAML files into a Config with `path:line:col` problems.

Pure except `validate`/`load_config`, which read the files. Values are built from the node tree that
`yaml.compose` makes with SafeLoader's tag resolution, so every problem points at the node it is about.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

from croniter import croniter
from yaml.nodes import MappingNode, Node, ScalarNode

from angora_rq.definitions import nodes as yamlnodes
from angora_rq.definitions import flow
from angora_rq.core.errors import DefinitionError, InvalidInput
from angora_rq.core.graph import Graph
from angora_rq.core.messages import MAX_PARAM_VALUE, PARAM_NAME_RE, check_topic
from angora_rq.core.events import reserved_problem
from angora_rq.core.model import Config, JobDef, Location, Problem, ScheduleDef, WebhookDef
from angora_rq.core.topics import pattern_error
from angora_rq.definitions.nodes import INVALID, KIND_WORDS, NodeError, kind, short

SUFFIXES = (".yml", ".yaml")
MAX_NAME = 200
QUEUE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Validator = Callable[["_Entry", str, Node], Any]


@dataclass
class _File:
    """What one file yields: definitions, problems, and every (kind, name, location) of its entries."""

    path: str
    jobs: list[JobDef] = field(default_factory=list)
    schedules: list[ScheduleDef] = field(default_factory=list)
    webhooks: list[WebhookDef] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    names: list[tuple[str, str, Location]] = field(default_factory=list)
    tagged: set[int] = field(default_factory=set)  # nodes whose disallowed tag is already reported
    failure_topics: list[tuple[str, str, Location]] = field(default_factory=list)  # (job, topic, where) of on_failure


@dataclass
class _Entry:
    """The entry being validated: problems it records carry its name."""

    file: _File
    kind: str = "job"
    name: Optional[str] = None
    location: Optional[Location] = None

    def fail(self, node: Node, message: str) -> Any:
        """Record an error at `node`; return INVALID."""
        if kind(node) == "bad":  # a forbidden tag is the real problem wherever it is met, reported once
            if id(node) in self.file.tagged:
                return INVALID
            self.file.tagged.add(id(node))
            message = yamlnodes.bad_tag_message(node)
        self.file.problems.append(Problem(_loc(self.file.path, node), message, job=self.name, kind=self.kind))
        return INVALID


def _loc(path: str, node: Node) -> Location:
    """Where `node` starts in file `path`."""
    return Location(path, *yamlnodes.where(node))


# -- checks of single values: what is wrong (completing "'key' ..."), or None ----------------------------

def _name_problem(name: str) -> Optional[str]:
    """Why `name` cannot name a job or schedule (it is also a log file name and part of Redis keys)."""
    if name == "":
        return "must not be empty"
    if name in (".", "..") or "/" in name:
        return f"must not be '.' or '..' or contain '/' (it is also a file name), not {short(name)!r}"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "must not contain control characters"
    if name != name.strip():
        return "must not start or end with a space"
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    return None


def _queue_problem(queue: str) -> Optional[str]:
    """Why `queue` cannot name an RQ queue."""
    return None if QUEUE_RE.match(queue) else f"must be 1-100 characters of A-Z a-z 0-9 _ . -, not {short(queue)!r}"


def _cron_problem(expression: str) -> Optional[str]:
    """Why croniter refuses `expression`."""
    if croniter.is_valid(expression):
        return None
    return (f"must be a cron expression (minute hour day-of-month month day-of-week, "
            f"e.g. \"5 1 * * *\"), not {short(expression)!r}")


def _timezone_problem(name: str) -> Optional[str]:
    """Why zoneinfo does not know time zone `name`."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as 'Europe'
        return f"must be a known time zone (e.g. UTC, Europe/Paris), not {short(name)!r}"
    return None


def _sent_topic_problem(topic: str) -> Optional[str]:
    """Why `topic` cannot be sent (messages.check_topic's rules; events are Angora's), as a whole sentence."""
    try:
        check_topic(topic)
    except InvalidInput as err:
        return err.message
    return reserved_problem(topic)


def _topic_problem(topic: str) -> Optional[str]:
    """Why `topic` cannot be a schedule's message, completing "'message' ..."."""
    problem = _sent_topic_problem(topic)
    return f"must be an exact topic: {problem}" if problem else None


_params = partial(yamlnodes.text_map, names=PARAM_NAME_RE, limit=MAX_PARAM_VALUE,
                  rule="letters, digits and _, not starting with a digit, at most 64 characters")
_name = partial(yamlnodes.checked, check=_name_problem)
JOB_FIELDS: dict[str, Validator] = {
    "name": _name,
    "triggers": partial(yamlnodes.string_list, check=pattern_error, required=True),
    "command": yamlnodes.argv,
    "log": yamlnodes.text,
    "messages": partial(yamlnodes.string_list, check=_sent_topic_problem, required=False),
    "replay": partial(yamlnodes.integer, minimum=0,
                      what="a whole number >= 0 (leave it out for unlimited replays)"),
    "parent_success": yamlnodes.boolean,
    "description": yamlnodes.text,
    "timeout": partial(yamlnodes.duration, positive=True),
    "queue": partial(yamlnodes.checked, check=_queue_problem),
    "env": partial(yamlnodes.text_map, names=ENV_NAME_RE, limit=1 << 20,
                   rule="letters, digits and _, not starting with a digit"),
    "cwd": yamlnodes.text,
    "params": _params,
    "concurrency": partial(yamlnodes.integer, minimum=1, what="a whole number >= 1"),
    "replay_delay": partial(yamlnodes.duration, positive=False),
    "on_failure": partial(yamlnodes.string_list, check=_sent_topic_problem, required=False),
    "approval": yamlnodes.boolean,
    "approval_timeout": partial(yamlnodes.duration, positive=True),
    "on_approval_timeout": partial(yamlnodes.choice, choices=("reject", "approve")),
}
SCHEDULE_FIELDS: dict[str, Validator] = {
    "schedule": _name,
    "cron": partial(yamlnodes.checked, check=_cron_problem),
    "every": partial(yamlnodes.duration, positive=True),
    "timezone": partial(yamlnodes.checked, check=_timezone_problem),
    "message": partial(yamlnodes.checked, check=_topic_problem),
    "params": _params,
    "catchup": partial(yamlnodes.choice, choices=("skip", "once")),
    "overlap": partial(yamlnodes.choice, choices=("allow", "forbid")),
    "description": yamlnodes.text,
}
WEBHOOK_FIELDS: dict[str, Validator] = flow.webhook_fields(_name)
FIELDS = {"job": JOB_FIELDS, "schedule": SCHEDULE_FIELDS, "webhook": WEBHOOK_FIELDS}
REQUIRED = {"job": ("name", "triggers", "command"), "schedule": ("schedule", "message"),
            "webhook": ("webhook", "url", "events")}
SCHEDULE_ONLY = {"cron", "every", "timezone", "message", "catchup", "overlap"}


# -- entries ---------------------------------------------------------------------------------------

def _entry_kind(keys: set[str]) -> str:
    """'webhook' or 'schedule' for an entry that looks like one (a schedule even without its 'schedule' key), else
    'job'."""
    if "webhook" in keys and "name" not in keys and "schedule" not in keys:
        return "webhook"
    if "schedule" in keys or ("name" not in keys and keys & SCHEDULE_ONLY):
        return "schedule"
    return "job"


def _entry(f: _File, node: Node, index: int) -> None:
    """Validate one list entry and add the job or schedule it defines to `f`."""
    if kind(node) != "map":
        _Entry(f).fail(node, f"entry {index} must be a map (name: ..., triggers: ..., command: ...), "
                             f"not {KIND_WORDS[kind(node)]}")
        return
    assert isinstance(node, MappingNode)
    items, problems = yamlnodes.pairs(node)
    by_key = {k: (key_node, value) for k, key_node, value in items}
    e = _Entry(f, _entry_kind(set(by_key)))
    before = len(f.problems)
    values = _fields(e, node, items, by_key, problems)
    if e.kind == "schedule":
        _check_timing(e, node, by_key)
    elif e.kind == "job":
        flow.check_gate(e, by_key, values)
    if len(f.problems) == before and all(v is not INVALID for v in values.values()):
        _add(f, e, values)
        if e.kind == "job" and values.get("on_failure"):
            f.failure_topics += [(str(e.name), str(item.value), _loc(f.path, item))
                                 for item in by_key["on_failure"][1].value]


def _fields(e: _Entry, node: MappingNode, items: list[yamlnodes.Pair], by_key: dict[str, tuple[ScalarNode, Node]],
            problems: list[yamlnodes.NodeProblem]) -> dict[str, Any]:
    """Validate every key of an entry (its name first, so later problems say whose they are)."""
    fields, required = FIELDS[e.kind], REQUIRED[e.kind]
    head = required[0]
    e.location = _loc(e.file.path, by_key[head][0] if head in by_key else node)
    values = {head: _field(e, fields, head, by_key[head][1], True)} if head in by_key else {}
    if isinstance(values.get(head), str):
        e.name = values[head]
        e.file.names.append((e.kind, values[head], e.location))
    for bad, message in problems:
        e.fail(bad, message)
    for key, key_node, value in items:
        if key == head:
            continue
        if key in ("name", "schedule", "webhook") and "webhook" in (key, head):
            e.fail(key_node, "an entry is a job ('name'), a schedule ('schedule') or a webhook ('webhook'): one")
        elif key in ("name", "schedule"):
            e.fail(key_node, "an entry is either a job ('name') or a schedule ('schedule'), not both")
        elif key not in fields:
            e.fail(key_node, yamlnodes.unknown_key(key, list(fields)))
        else:
            values[key] = _field(e, fields, key, value, key in required)
    for key in required:
        if key not in by_key:
            e.fail(node, f"missing required key {key!r}")
    return values


def _field(e: _Entry, fields: dict[str, Validator], key: str, value: Node, required: bool) -> Any:
    """One validated value; an optional key left empty (null) means its default."""
    if kind(value) == "null":
        return e.fail(value, f"{key!r} has no value") if required else None
    return fields[key](e, key, value)


def _check_timing(e: _Entry, node: Node, by_key: dict[str, tuple[ScalarNode, Node]]) -> None:
    """A schedule has exactly one of 'cron' and 'every'."""
    given = [k for k in ("cron", "every") if k in by_key and kind(by_key[k][1]) != "null"]
    if len(given) == 2:
        e.fail(by_key["every"][0], "use either 'cron' or 'every', not both")
    elif not given:
        e.fail(node, "a schedule needs 'cron' (e.g. \"5 1 * * *\") or 'every' (e.g. 30m)")


def _add(f: _File, e: _Entry, values: dict[str, Any]) -> None:
    """Build the definition from validated values (None = the field's default)."""
    given = {k: v for k, v in values.items() if v is not None}
    if e.kind == "webhook":
        given["name"] = given.pop("webhook")
        f.webhooks.append(WebhookDef(**given, location=e.location))
    elif e.kind == "schedule":
        given["name"] = given.pop("schedule")
        f.schedules.append(ScheduleDef(**given, location=e.location))
    else:
        f.jobs.append(JobDef(**given, location=e.location))


def _parse_file(text: str, path: str) -> _File:
    """Every definition and problem of one file's text (no cross-file checks)."""
    f = _File(path)
    try:
        root = yamlnodes.compose(text)
    except NodeError as err:
        f.problems.append(Problem(Location(path, err.line, err.col), err.message))
        return f
    if root is None or kind(root) == "null":
        f.problems.append(Problem(Location(path, 1, 1), "file is empty: it defines no jobs", severity="warning"))
        return f
    if kind(root) != "list":
        _Entry(f).fail(root, "the file must hold a list of entries ('- name: ...' for jobs, "
                             f"'- schedule: ...' for schedules), not {KIND_WORDS[kind(root)]}")
    else:
        for index, node in enumerate(root.value, 1):
            _entry(f, node, index)
    for node in yamlnodes.walk(root):  # forbidden tags where no field looked (e.g. under an unknown key)
        if kind(node) == "bad" and id(node) not in f.tagged:
            _Entry(f).fail(node, "")
    return f


def parse_text(text: str, path: str) -> tuple[list[JobDef], list[ScheduleDef], list[Problem]]:
    """The jobs, schedules and problems (errors and warnings) of one file's text; `path` names it."""
    f = _parse_file(text, path)
    return f.jobs, f.schedules, _in_order(f.problems + _duplicates(f.names), [path])


def _duplicates(names: list[tuple[str, str, Location]]) -> list[Problem]:
    """An error at every place a job (or schedule) name is defined more than once."""
    places: dict[tuple[str, str], list[Location]] = defaultdict(list)
    for kind_, name, location in names:
        places[(kind_, name)].append(location)
    out = []
    for (kind_, name), locations in places.items():
        for i, location in enumerate(locations):
            others = ", ".join(str(o) for j, o in enumerate(locations) if j != i)
            if others:
                out.append(Problem(location, f"duplicate {kind_} name {name!r} (also defined at {others})",
                                   job=name, kind=kind_))
    return out


# -- files (the only I/O) --------------------------------------------------------------------------

def _find_files(root: Path) -> tuple[list[tuple[Path, str]], list[Problem]]:
    """The definition files under `root` (or `root` itself) with names relative to it, sorted by name."""
    if not root.exists():
        return [], [Problem(None, f"definitions folder {str(root)!r} does not exist "
                                  "(give --config PATH or set ANGORA_CONFIG)")]
    if not root.is_dir():
        return [(root, root.name)], []
    problems: list[Problem] = []

    def unreadable(err: OSError) -> None:
        problems.append(Problem(None, f"cannot read folder {err.filename!r}: {err.strerror}"))

    found = []
    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, editors' and tools' folders
        # hidden files are skipped too: Emacs' lock files '.#jobs.yml' are dangling symlinks
        found += [Path(folder, n) for n in files if n.endswith(SUFFIXES) and not n.startswith(".")]
    if not found and not problems:
        problems.append(Problem(None, f"no definition files (*.yml, *.yaml) in {str(root)!r}", severity="warning"))
    return sorted(((p, p.relative_to(root).as_posix()) for p in found), key=lambda pair: pair[1]), problems


def _read_text(path: Path) -> tuple[str, bytes] | Problem:
    """The UTF-8 text (without a byte order mark) and bytes of one file, or why they cannot be had."""
    where = Location(str(path), 1, 1)
    try:
        # O_NONBLOCK: a FIFO named jobs.yml must not hang us waiting for a writer
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return Problem(where, "cannot read file: not a regular file")
            data = fh.read(yamlnodes.MAX_BYTES + 1)  # never more, whatever the file claims to be
    except OSError as err:
        return Problem(where, f"cannot read file: {err.strerror or err}")
    if len(data) > yamlnodes.MAX_BYTES:
        return Problem(where, yamlnodes.TOO_BIG)
    try:
        return data.decode("utf-8").removeprefix("\ufeff"), data
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        col = len(data[line_start:err.start].decode("utf-8")) + 1
        where = Location(str(path), data.count(b"\n", 0, err.start) + 1, col)
        return Problem(where, f"file is not valid UTF-8 (byte 0x{data[err.start]:02x}); save it as UTF-8")


def _version(contents: list[tuple[str, bytes]]) -> str:
    """A short hash of the file names and contents: equal definitions, equal versions, wherever they lie."""
    h = hashlib.sha256()
    for name, data in sorted(contents):
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:12]


def _in_order(problems: list[Problem], paths: list[str]) -> list[Problem]:
    """Errors before warnings, each in file order then line and column order."""
    rank = {p: i for i, p in enumerate(paths)}

    def key(p: Problem) -> tuple[bool, int, int, int]:
        loc = p.location
        return (p.severity != "error", rank.get(loc.path, -1) if loc else -1,
                loc.line if loc else 0, loc.col if loc else 0)

    return sorted(problems, key=key)


@dataclass(frozen=True)
class Checked:
    """What `check` found: the Config (None if any error), every problem, and how many entries the files hold."""

    config: Optional[Config]
    problems: list[Problem]
    jobs: int  # job entries with a name, valid or not
    schedules: int


def check(path: str | Path) -> Checked:
    """Load the definitions at `path` (folder or file): errors, warnings and counts even when some entries fail.

    With errors, the graph's warnings cover the entries that are valid (an entry with an error is not in the graph).
    """
    files, problems = _find_files(Path(path))
    parsed, contents = [], []
    for file, name in files:
        got = _read_text(file)
        if isinstance(got, Problem):
            problems.append(got)
            continue
        parsed.append(_parse_file(got[0], str(file)))
        contents.append((name, got[1]))
    names = [n for f in parsed for n in f.names]
    problems += [p for f in parsed for p in f.problems]
    problems += _duplicates(names)
    paths = [str(f) for f, _ in files]
    jobs = [j for f in parsed for j in f.jobs]
    schedules = [s for f in parsed for s in f.schedules]
    counts = (len({n for k, n, _ in names if k == "job"}), len({n for k, n, _ in names if k == "schedule"}))
    graph = Graph(jobs, schedules)
    # an on_failure topic nobody hears is an error; how the jobs connect otherwise (dead messages, cycles, event
    # triggers matching no event) is only worth warnings
    unheard = flow.unheard_failures(graph, [t for f in parsed for t in f.failure_topics])
    problems = _in_order(problems + unheard + graph.warnings() + flow.trigger_warnings(jobs), paths)
    if any(p.severity == "error" for p in problems):
        return Checked(None, problems, *counts)
    config = Config(jobs=tuple(jobs), schedules=tuple(schedules), warnings=tuple(problems),
                    version=_version(contents), files=tuple(paths),
                    webhooks=tuple(w for f in parsed for w in f.webhooks))
    return Checked(config, problems, *counts)


def validate(path: str | Path) -> tuple[Optional[Config], list[Problem]]:
    """Load the definitions at `path` (folder or file): the Config (None if any error) and every problem."""
    checked = check(path)
    return checked.config, checked.problems


def load_config(path: str | Path) -> Config:
    """The valid definitions at `path` (folder or file); DefinitionError lists every error otherwise."""
    config, problems = validate(path)
    if config is None:
        raise DefinitionError([p for p in problems if p.severity == "error"])
    return config
