"""The script loader (headers, preamble, includes, SHA1), the one bind helper, and every call site against the
headers: each `SCRIPT.bind(...)` in the package names exactly the script's KEYS and ARGV."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import redis

import angora_rq
from angora_rq.core import schema
from angora_rq.store import scripts
from angora_rq.store.link import Link
from angora_rq.store.scripts import LIBRARY, ScriptError, load_library

PACKAGE = Path(angora_rq.__file__).parent
CONSTANTS = {name: value for name, value in vars(scripts).items() if isinstance(value, scripts.Script)}


def library(tmp_path: Path, **files: str) -> dict[str, scripts.Script]:
    for name, text in files.items():
        (tmp_path / f"{name}.lua").write_text(text)
    return load_library(tmp_path)


def bind_calls() -> list[tuple[Path, ast.Call, str]]:
    """Every `<CONSTANT>.bind(...)` call in the package: (file, call, constant)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "bind"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in CONSTANTS):
                out.append((path, node, node.func.value.id))
    return out


# -- the package's scripts -------------------------------------------------------------------------------------

def test_every_lua_file_is_loaded_and_bound_to_a_constant() -> None:
    files = sorted(p.stem for p in (PACKAGE / "store" / "lua").glob("*.lua"))
    assert sorted(LIBRARY) == files
    assert sorted(s.name for s in CONSTANTS.values()) == files
    assert all(CONSTANTS[name.upper()] is script for name, script in LIBRARY.items())


def test_every_call_site_passes_exactly_the_header_names() -> None:
    bound: set[str] = set()
    for path, call, constant in bind_calls():
        where = f"{path.relative_to(PACKAGE)}:{call.lineno}"
        assert not call.args and all(k.arg is not None for k in call.keywords), f"{where}: keywords only, no **"
        names = {str(k.arg) for k in call.keywords}
        script = CONSTANTS[constant]
        assert names == script.names, (where, sorted(script.names - names), sorted(names - script.names))
        bound.add(constant)
    assert bound == set(CONSTANTS), f"scripts no code calls: {sorted(set(CONSTANTS) - bound)}"


def test_scripts_run_one_way() -> None:
    """Nothing but scripts.py (and the Link under it) sends a script to Redis."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("scripts.py", "link.py"):
            continue
        text = path.read_text()
        for banned in ("register_script", ".eval(", ".evalsha(", '"EVAL', "evalsha", "redis.call("):
            assert banned not in text, f"{path.relative_to(PACKAGE)}: {banned}"


def test_the_local_sha1_is_the_one_redis_computes(r: redis.Redis) -> None:
    for script in LIBRARY.values():
        assert r.script_load(script.text) == script.sha, script.name


def test_bind_takes_exactly_the_header_names_by_keyword() -> None:
    call = scripts.RESIGN.bind(lease="L", value="me 1")
    assert (call.keys, call.args) == (["L"], ["me 1"])
    with pytest.raises(TypeError, match=r"missing \['value'\], unexpected \['valu'\]"):
        scripts.RESIGN.bind(lease="L", valu="me 1")
    call = scripts.READ_RUNS.bind(defs_prefix="d:", runs=("k1", "plan", "k2", "all"))
    assert (call.keys, call.args) == ([], ["d:", "k1", "plan", "k2", "all"])
    with pytest.raises(TypeError, match="list or tuple"):
        scripts.READ_RUNS.bind(defs_prefix="d:", runs="k1")  # a str would be spread into characters


def test_every_schema_namespace_names_each_redis_field_once() -> None:
    for namespace in schema.LUA.values():
        values = list(namespace.fields().values())
        assert values and len(set(values)) == len(values), namespace.__name__


def test_status_sets_are_consistent() -> None:
    assert schema.FAILED < schema.FINAL and schema.SUCCEEDED < schema.FINAL
    assert schema.FAILED < schema.SKIPPABLE and not schema.SKIPPABLE & schema.SUCCEEDED
    assert not schema.WAITING & schema.FINAL and schema.WAITING < schema.NOT_STARTED
    assert set(schema.Status.fields().values()) >= schema.FINAL | schema.NOT_STARTED | schema.SKIPPABLE


# -- the loader ------------------------------------------------------------------------------------------------

def test_header_names_become_locals_and_a_tail_its_first_index(tmp_path: Path, r: redis.Redis) -> None:
    lib = library(tmp_path, echo="""-- Echo what it was given.
-- KEYS: first second
-- ARGV: a b
-- ARGV: rest...
return {first, second, a, b, unpack(ARGV, rest)}
""")
    echo = lib["echo"]
    assert (echo.keys, echo.argv, echo.tail) == (("first", "second"), ("a", "b"), "rest")
    call = echo.bind(first="k1", second="k2", a="x", b="y", rest=["p", "q"])
    assert call.run(Link(r)) == [b"k1", b"k2", b"x", b"y", b"p", b"q"]
    assert echo.bind(first="k1", second="k2", a="x", b="y", rest=[]).run(Link(r)) == [b"k1", b"k2", b"x", b"y"]


def test_schema_names_become_the_schemas_values(tmp_path: Path, r: redis.Redis) -> None:
    lib = library(tmp_path, fields="""-- KEYS: key
-- ARGV:
redis.call('HSET', key, EXEC.status, STATUS.queued, RUN.job_status .. 'load', STATUS.held)
return redis.call('HGETALL', key)
""")
    assert "redis.call('HSET', key, 's', 'queued', 's:' .. 'load', 'held')" in lib["fields"].text
    assert lib["fields"].bind(key="h").run(Link(r)) == [b"s", b"queued", b"s:load", b"held"]


def test_redis_errors_give_the_files_line_numbers(tmp_path: Path, r: redis.Redis) -> None:
    lib = library(tmp_path, boom="""-- A header of three lines,
-- KEYS:
-- ARGV: x
local y = x
return redis.call('NOSUCHCOMMAND', y)
""")
    with pytest.raises(redis.exceptions.ResponseError, match=r"user_script:5\b"):
        lib["boom"].bind(x="1").run(Link(r))


def test_an_included_script_runs_as_a_function_with_its_own_keys_and_argv(tmp_path: Path, r: redis.Redis) -> None:
    lib = library(tmp_path, inner="""-- KEYS: key
-- ARGV: value more...
redis.call('SET', key, value)
return {value, unpack(ARGV, more)}
""", outer="""-- KEYS: key
-- ARGV: value
-- include: inner
local got = inner({key .. ':inner'}, {'v-' .. value, 'm1', 'm2'})
return {key, value, unpack(got)}
""")
    assert lib["outer"].bind(key="k", value="1").run(Link(r)) == [b"k", b"1", b"v-1", b"m1", b"m2"]
    assert r.get("k:inner") == b"v-1" and r.get("k") is None  # the outer script's own locals are untouched


def test_an_including_script_hands_its_include_a_lua_value(tmp_path: Path, r: redis.Redis) -> None:
    inner = """-- KEYS:
-- ARGV: value
if HANDED then return {value, HANDED.extra} end
return {value, 'alone'}
"""
    lib = library(tmp_path, inner=inner, outer="""-- KEYS:
-- ARGV:
-- include: inner
local with, without = inner({}, {'a'}, {extra = 'handed'}), inner({}, {'b'})
return {with[1], with[2], without[1], without[2]}
""")
    assert lib["outer"].bind().run(Link(r)) == [b"a", b"handed", b"b", b"alone"]
    assert lib["inner"].bind(value="c").run(Link(r)) == [b"c", b"alone"]  # run by a client: HANDED is nil


def test_a_lib_is_code_ahead_of_the_body_of_the_scripts_that_ask_for_it(tmp_path: Path, r: redis.Redis) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "twice.lua").write_text("-- a helper\nlocal function twice(x) return x .. x end\n")
    lib = library(tmp_path, a="-- KEYS:\n-- ARGV: x\n-- lib: twice\nreturn twice(x)\n",
                  b="-- KEYS:\n-- ARGV:\n-- include: a\n-- lib: twice\nreturn {a({}, {'y'}), twice('z')}\n")
    assert lib["a"].bind(x="ab").run(Link(r)) == b"abab"
    assert lib["b"].bind().run(Link(r)) == [b"yy", b"zz"]  # the included script's copy and the includer's


def test_a_lib_must_exist_and_hide_no_name(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    with pytest.raises(ScriptError, match="asks for lib/none.lua, which does not exist"):
        library(tmp_path / "one", a="-- KEYS:\n-- ARGV:\n-- lib: none\nreturn 1\n")
    (tmp_path / "two" / "lib").mkdir(parents=True)
    (tmp_path / "two" / "lib" / "h.lua").write_text("local x = 1\n")
    with pytest.raises(ScriptError, match="lib/h.lua:1: the local 'x' hides"):
        library(tmp_path / "two", c="-- KEYS:\n-- ARGV: x\n-- lib: h\nreturn 1\n")


@pytest.mark.parametrize("files, error", [
    ({"a": "-- KEYS: k\nreturn 1\n"}, "must name its KEYS and ARGV"),
    ({"a": "-- KEYS: k\n-- KEYS: j\n-- ARGV:\nreturn 1\n"}, "more than one KEYS line"),
    ({"a": "-- KEYS: k\n-- ARGV: k\nreturn 1\n"}, "appears twice"),
    ({"a": "-- KEYS: end\n-- ARGV:\nreturn 1\n"}, "'end' cannot name"),
    ({"a": "-- KEYS:\n-- ARGV: redis\nreturn 1\n"}, "'redis' cannot name"),
    ({"a": "-- KEYS:\n-- ARGV: rest... last\nreturn 1\n"}, "'rest...' cannot name"),
    ({"a": "-- KEYS: k\n-- ARGV:\nreturn KEYS[1]\n"}, "not by position"),
    ({"a": "-- KEYS:\n-- ARGV: x\nreturn ARGV[1]\n"}, "not by position"),
    ({"a": "-- KEYS: k\n-- ARGV:\nreturn EXEC.no_such_field\n"}, "no EXEC.no_such_field"),
    ({"a": "-- KEYS: runs\n-- ARGV:\nlocal n, runs = 1, {}\nreturn n\n"}, r"a.lua:3: the local 'runs' hides"),
    ({"a": "-- KEYS:\n-- ARGV: x\n\nlocal function x() end\nreturn 1\n"}, r"a.lua:4: the local 'x' hides"),
    ({"a": "-- KEYS:\n-- ARGV: ids...\nfor _, ids in ipairs({}) do end\nreturn 1\n"}, "the local 'ids' hides"),
    ({"a": "-- KEYS:\n-- ARGV:\n-- include: b\nreturn 1\n"}, "b.lua, which does not exist"),
    ({"a": "-- KEYS:\n-- ARGV:\n-- include: b\nreturn 1\n",
      "b": "-- KEYS:\n-- ARGV:\n-- include: a\nreturn 1\n"}, "includes itself"),
])
def test_a_script_that_breaks_the_rules_does_not_load(tmp_path: Path, files: dict[str, str], error: str) -> None:
    with pytest.raises(ScriptError, match=error):
        library(tmp_path, **files)
