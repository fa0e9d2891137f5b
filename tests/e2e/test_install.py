"""The tests ran against the installed package (scripts/test), and that package holds what the source has."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import angora_rq

INSTALLED = os.environ.get("ANGORA_TEST_INSTALLED") == "1"
needs_install = pytest.mark.skipif(not INSTALLED, reason="only under scripts/test (a fresh, non-editable install)")


@needs_install
def test_the_installed_package_is_the_one_tested() -> None:
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert Path(sys.prefix).resolve() != Path(sys.base_prefix).resolve(), "not in a virtualenv"
    assert Path(angora_rq.__file__).resolve().is_relative_to(site), angora_rq.__file__
    print("angora_rq imported from", angora_rq.__file__)


@needs_install
def test_web_templates_and_static_files_are_installed() -> None:
    # find_spec, not import: this checks files, whatever state the web code is in.
    spec = importlib.util.find_spec("angora_rq.web")
    assert spec is not None and spec.submodule_search_locations
    installed = Path(list(spec.submodule_search_locations)[0])
    source = Path(__file__).resolve().parents[2] / "angora_rq" / "web"
    for folder in ("templates", "static"):
        wanted = [p.relative_to(source) for p in (source / folder).rglob("*")
                  if p.is_file() and not p.name.startswith(".")]
        missing = [str(p) for p in wanted if not (installed / p).is_file()]
        assert not missing, f"not installed with the package: {missing}"


@needs_install
def test_lua_scripts_are_installed() -> None:
    spec = importlib.util.find_spec("angora_rq.store")
    assert spec is not None and spec.submodule_search_locations
    installed = Path(list(spec.submodule_search_locations)[0]) / "lua"
    source = Path(__file__).resolve().parents[2] / "angora_rq" / "store" / "lua"
    wanted = sorted(p.name for p in source.glob("*.lua"))
    assert wanted and sorted(p.name for p in installed.glob("*.lua")) == wanted


@needs_install
def test_console_script_is_installed() -> None:
    exe = Path(sysconfig.get_paths()["scripts"]) / "angora"
    assert exe.exists()
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert any(line.split()[:1] == ["up"] for line in out.stdout.splitlines())

