"""Outputs: KEY=VALUE lines a command writes to $ANGORA_OUTPUT, recorded and passed on as params."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from angora_rq.commands import runner
from angora_rq.core.command import CommandSpec
from angora_rq.core.errors import InvalidInput
from angora_rq.core.execution import take_outputs
from angora_rq.core.outputs import MAX_OUTPUT, output_file, parse_outputs
from angora_rq.core.settings import Settings
from angora_rq.web import create_app
from angora_testkit import Make, python_cmd



# -- the rules (pure) -------------------------------------------------------------------------------------------

def test_outputs_are_key_value_lines() -> None:
    text = b"VERSION=1.2\r\n\n  \nURL=http://x/?a=b\nVERSION=1.3\nEMPTY=\n"
    assert parse_outputs(text) == {"URL": "http://x/?a=b", "VERSION": "1.3", "EMPTY": ""}
    assert parse_outputs(b"") == {}


@pytest.mark.parametrize("data, message", [
    (b"OK=1\nno equals sign\n", "line 2 of $ANGORA_OUTPUT has no '=' (write KEY=VALUE lines): 'no equals sign'"),
    (b"1ST=x\n", "line 1 of $ANGORA_OUTPUT: name '1ST' is not valid (letters, digits and _, not starting with a "
                 "digit, at most 64 characters)"),
    (b" A=x\n", "line 1 of $ANGORA_OUTPUT: name ' A' is not valid"),
    (b"A=" + b"x" * MAX_OUTPUT, f"$ANGORA_OUTPUT holds more than {MAX_OUTPUT} bytes"),
    (b"A=\xff\n", "$ANGORA_OUTPUT is not UTF-8 text (byte 2)"),
    (b"A=" + b"x" * 5000, "$ANGORA_OUTPUT: param 'A' is longer than 4096 characters"),
    ("".join(f"K{i}=v\n" for i in range(65)).encode(), "$ANGORA_OUTPUT: too many params (65; at most 64)"),
])
def test_outputs_that_break_the_rules_say_why(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_outputs(data)
    assert err.value.message.startswith(message)


@dataclass(frozen=True)
class Ended:
    exit_code: Optional[int]
    output: bytes
    reason: str = "exit"
    signal: Optional[int] = None
    started: float = 0.0
    ended: float = 0.0
    duration: float = 0.0
    tail: str = "done"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.reason == "exit"


def test_bad_outputs_fail_a_command_that_exited_0_and_are_told_in_its_tail() -> None:
    outcome, outputs = take_outputs(Ended(0, b"A=1\n"))
    assert outputs == {"A": "1"} and outcome.ok
    outcome, outputs = take_outputs(Ended(0, b"nope"))
    assert outputs == {} and not outcome.ok
    assert outcome.reason.startswith("output: line 1 of $ANGORA_OUTPUT has no '='")
    assert outcome.tail == f"done\nangora: {outcome.reason}\n"
    outcome, _ = take_outputs(Ended(2, b"nope"))
    assert outcome.reason == "exit" and "angora: output: line 1" in outcome.tail  # failed anyway: its reason kept


def test_the_runner_takes_the_file_and_never_blocks_on_what_is_there(tmp_path: Path) -> None:
    spool = str(tmp_path)

    def run(script: str, name: str) -> runner.Outcome:
        path = output_file(spool, name)
        env = dict(os.environ, ANGORA_OUTPUT=path)
        out = runner.run(CommandSpec(["sh", "-c", script], env, spool_dir=spool, timeout=30, output_path=path))
        assert not os.path.lexists(path)  # taken: nothing left in the spool
        return out

    assert run('echo A=1 >> "$ANGORA_OUTPUT"; echo B=2 >> "$ANGORA_OUTPUT"', "x1").output == b"A=1\nB=2\n"
    assert run("true", "x2").output == b""
    assert run('mkfifo "$ANGORA_OUTPUT"', "x3").output == b""  # a FIFO: not read, not waited on
    assert run('ln -s /etc/passwd "$ANGORA_OUTPUT"', "x4").output == b""  # a symlink: not followed
    big = run(f'head -c {MAX_OUTPUT * 4} /dev/zero | tr "\\0" x > "$ANGORA_OUTPUT"', "x5").output
    assert len(big) == MAX_OUTPUT + 1  # enough to know it is too much, no more


# -- through the real processes ---------------------------------------------------------------------------------

def test_outputs_are_recorded_shown_and_passed_to_the_next_job(system: Make, angora_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    s = system(f"""
        - name: build
          triggers: [go]
          command: [sh, -c, 'printf "VERSION=1.2.%s\\nNOTE=<b>x</b>\\n" "$ANGORA_PARAM_N" >> "$ANGORA_OUTPUT"']
          messages: [built]
        - name: deploy
          triggers: [built]
          command: {python_cmd("import os; print(os.environ['ANGORA_PARAM_VERSION'], os.environ['ANGORA_PARAM_N'])")}
    """)
    run_id = s.send("go", {"N": "7"})
    run = s.wait_run(run_id)
    assert run["status"] == "succeeded", s.logs()
    ex = {e["job"]: e for e in s.executions(run_id)}
    assert s.q.execution(ex["deploy"]["id"])["tail"].strip() == "1.2.7 7"
    assert ex["deploy"]["params"] == {"N": "7", "VERSION": "1.2.7", "NOTE": "<b>x</b>"}

    settings = Settings.from_env(dict(angora_env, ANGORA_CONFIG=str(tmp_path / "config")))
    client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
    body = client.get(f"/api/v1/executions/{ex['build']['id']}").get_json()
    assert body["outputs"] == {"VERSION": "1.2.7", "NOTE": "<b>x</b>"}
    assert client.get(f"/api/v1/executions/{ex['deploy']['id']}").get_json()["outputs"] == {}
    html = client.get(f"/executions/{ex['build']['id']}", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert 'id="outputs"' in html and "<code>VERSION</code>" in html and "<code>1.2.7</code>" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html


def test_a_bad_output_line_fails_the_execution_with_a_clear_reason(system: Make) -> None:
    s = system("""
        - name: build
          triggers: [go]
          command: [sh, -c, 'echo "no equals" > "$ANGORA_OUTPUT"']
          replay: 0
          messages: [built]
        - {name: deploy, triggers: [built], command: "true"}
    """)
    run = s.wait_run(s.send("go"))
    assert run["status"] == "failed", s.logs()
    assert run["jobs"]["deploy"]["status"] == "upstream_failed"
    build = s.q.execution(run["jobs"]["build"]["execution"])
    assert build["status"] == "failed" and build["exit_code"] == 0
    assert build["reason"] == ("output: line 1 of $ANGORA_OUTPUT has no '=' (write KEY=VALUE lines): 'no equals'")
    assert build["tail"].endswith(f"angora: {build['reason']}\n") and build["outputs"] == {}


def test_too_much_output_fails_the_execution(system: Make) -> None:
    s = system(f"""
        - name: build
          triggers: [go]
          command: {python_cmd("import os; open(os.environ['ANGORA_OUTPUT'], 'w').write('A=' + 'x' * 20000)")}
          replay: 0
    """)
    run = s.wait_run(s.send("go"))
    build = s.q.execution(run["jobs"]["build"]["execution"])
    assert build["status"] == "failed", s.logs()
    assert build["reason"] == f"output: $ANGORA_OUTPUT holds more than {MAX_OUTPUT} bytes; pass bigger values in files"


def test_outputs_reach_the_failure_branch_too(system: Make) -> None:
    s = system(f"""
        - name: build
          triggers: [go]
          command: [sh, -c, 'echo "STEP=compile" >> "$ANGORA_OUTPUT"; exit 4']
          replay: 0
          on_failure: [build.failed]
        - name: notify
          triggers: [build.failed]
          command: {python_cmd("import os; print(os.environ['ANGORA_PARAM_STEP'])")}
    """)
    run = s.wait_run(s.send("go"))
    assert run["jobs"]["notify"]["status"] == "succeeded", s.logs()
    assert s.q.execution(run["jobs"]["notify"]["execution"])["tail"].strip() == "compile"
    assert s.q.execution(run["jobs"]["build"]["execution"])["outputs"] == {"STEP": "compile"}
