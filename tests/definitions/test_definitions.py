"""Definitions: the malformed corpus (exact line:col and text of every problem), files, defaults, warnings."""
from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from angora_rq.definitions.load import load_config, parse_text, validate
from angora_rq.core.errors import AngoraError, DefinitionError
from angora_rq.core.model import JobDef, Location, Problem, ScheduleDef

HERE = Path(__file__).parent
MALFORMED = HERE / "malformed"
EXAMPLES = HERE.parents[1] / "config"
CASES = sorted(p.name for p in MALFORMED.iterdir())


def expected_problems(case: Path) -> list[str]:
    """The `# expect: LINE:COL: text` header lines of a case (a file, or a folder of files), as full texts."""
    folder = case if case.is_dir() else case.parent
    files = sorted(case.rglob("*.yml")) if case.is_dir() else [case]
    out = []
    for f in files:
        for line in f.read_text().splitlines():
            if line.startswith("# expect: "):
                out.append(f"{f}:" + line[len("# expect: "):].replace("{dir}", str(folder)))
    return out


def write(folder: Path, name: str, text: str) -> Path:
    """Write a dedented definitions file; return its path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path: Path) -> list[str]:
    """The error texts validate() reports for `path`."""
    config, problems = validate(path)
    errors = [str(p) for p in problems if p.severity == "error"]
    assert (config is None) == bool(errors)
    return errors


# -- the malformed corpus ------------------------------------------------------------------------------

def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len(expected_problems(MALFORMED / "several_problems.yml")) >= 5


@pytest.mark.parametrize("case", CASES)
def test_malformed_definitions_report_exact_locations_and_text(case: str) -> None:
    path = MALFORMED / case
    expected = expected_problems(path)
    assert expected, f"{case} has no '# expect:' line"
    assert errors_of(path) == expected


@pytest.mark.parametrize("case", ["several_problems.yml", "duplicate_names_across_files"])
def test_load_config_raises_with_every_error(case: str) -> None:
    with pytest.raises(DefinitionError) as info:
        load_config(MALFORMED / case)
    assert [str(p) for p in info.value.problems] == expected_problems(MALFORMED / case)
    assert isinstance(info.value, AngoraError) and info.value.status == 400
    assert info.value.detail == expected_problems(MALFORMED / case)


@pytest.mark.parametrize("field, value, message", [
    ("parent_success", "!!bool maybe", "'parent_success': 'maybe' is not a valid bool"),
    ("replay", "!!int abc", "'replay': 'abc' is not a valid int"),
    ("replay", "0b_", "'replay': '0b_' is not a valid int"),  # PyYAML's safe_load itself crashes on this one
    ("timeout", "!!float soon", "'timeout': 'soon' is not a valid float"),
    ("description", "2024-13-45", "'description' must be a string, not a date "
                                  "(put it in quotes if you mean the text \"2024-13-45\")"),
])
def test_explicitly_tagged_or_odd_scalars_are_errors_not_crashes(field: str, value: str, message: str) -> None:
    _, _, problems = parse_text(f"- name: a\n  triggers: [t]\n  command: ls\n  {field}: {value}\n", "t.yml")
    assert [str(p) for p in problems] == [f"t.yml:4:{len(field) + 5}: job 'a': {message}"]


def test_problem_text_names_the_job_and_points_at_the_node() -> None:
    _, _, problems = parse_text("- name: load\n  triggers: [a]\n  command: ls\n  trigers: [x]\n", "config/etl.yml")
    assert [str(p) for p in problems] == [
        "config/etl.yml:4:3: job 'load': unknown key 'trigers' (did you mean 'triggers'?)"]
    assert problems[0] == Problem(Location("config/etl.yml", 4, 3), "unknown key 'trigers' (did you mean 'triggers'?)",
                                  job="load")


# -- whole-file problems made in tmp_path (not committed) ----------------------------------------------

def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yml"
    path.write_text("- name: a\n  triggers: [a]\n  command: ls\n" + "#" * 80 + "\n" * 1 + ("# padding\n" * 110_000))
    assert errors_of(path) == [f"{path}:1:1: file is larger than 1 MiB; split it into several files"]


def test_huge_text_is_refused_by_parse_text() -> None:
    _, _, problems = parse_text("#" * (1024 * 1024 + 1), "big.yml")
    assert [str(p) for p in problems] == ["big.yml:1:1: file is larger than 1 MiB; split it into several files"]


def test_non_utf8_file_points_at_the_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes("- name: caf\u00e9\n  triggers: [a]\n  description: d\u00e9j\u00e0\n".encode("latin-1"))
    assert errors_of(path) == [f"{path}:1:12: file is not valid UTF-8 (byte 0xe9); save it as UTF-8"]


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yml"
    path.write_bytes(b"\xef\xbb\xbf- name: a\n  triggers: [a]\n  command: ls\n  trigers: [b]\n")
    assert errors_of(path) == [f"{path}:4:3: job 'a': unknown key 'trigers' (did you mean 'triggers'?)"]


def test_control_character_is_an_error_with_location(tmp_path: Path) -> None:
    path = write(tmp_path, "ctl.yml", "- name: a\n  triggers: [a]\n  command: echo a\x07b\n")
    assert errors_of(path) == [f"{path}:3:18: character #x0007 is not allowed in YAML"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.yml", "- {name: a, triggers: [a], command: ls}\n")
    path.chmod(0)
    try:
        assert errors_of(tmp_path) == [f"{path}:1:1: cannot read file: Permission denied"]
    finally:
        path.chmod(0o644)


def test_dangling_symlink_is_an_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "gone.yml").symlink_to(tmp_path / "nowhere.yml")
    assert errors_of(tmp_path) == [f"{tmp_path / 'gone.yml'}:1:1: cannot read file: No such file or directory"]


def test_fifo_named_like_a_definition_file_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yml")
    assert errors_of(tmp_path) == [f"{tmp_path / 'pipe.yml'}:1:1: cannot read file: not a regular file"]


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert errors_of(missing) == [f"definitions folder {str(missing)!r} does not exist "
                                  "(give --config PATH or set ANGORA_CONFIG)"]
    with pytest.raises(DefinitionError, match="does not exist"):
        load_config(str(missing))


def test_empty_file_is_a_warning_not_an_error(tmp_path: Path) -> None:
    write(tmp_path, "empty.yml", "")
    write(tmp_path, "comments.yml", "# nothing yet\n")
    config, problems = validate(tmp_path)
    assert config is not None and config.jobs == ()
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'comments.yml'}:1:1: warning: file is empty: it defines no jobs",
        f"{tmp_path / 'empty.yml'}:1:1: warning: file is empty: it defines no jobs",
    ]
    assert config.warnings == tuple(problems)


def test_folder_without_definition_files_is_a_warning(tmp_path: Path) -> None:
    config, problems = validate(tmp_path)
    assert config is not None and config.jobs == () and config.files == ()
    assert [p.message for p in problems] == [f"no definition files (*.yml, *.yaml) in {str(tmp_path)!r}"]


# -- files: which, in which order, and the version ------------------------------------------------------

def test_files_are_found_recursively_sorted_and_hidden_ones_skipped(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "- {name: b, triggers: [t], command: ls}\n")
    write(tmp_path, "a/z.yml", "- {name: z, triggers: [t], command: ls}\n")
    write(tmp_path, "a.yml", "- {name: a, triggers: [t], command: ls}\n")
    write(tmp_path, "notes.txt", "not yaml")
    write(tmp_path, ".hidden.yml", "garbage: [")
    write(tmp_path, ".git/x.yml", "garbage: [")
    (tmp_path / "dir.yml").mkdir()  # a folder named like a file is a folder
    write(tmp_path, "dir.yml/inner.yml", "- {name: inner, triggers: [t], command: ls}\n")
    config = load_config(tmp_path)
    names = ["a.yml", "a/z.yml", "b.yaml", "dir.yml/inner.yml"]
    assert config.files == tuple(str(tmp_path / n) for n in names)
    assert [j.name for j in config.jobs] == ["a", "z", "b", "inner"]


def test_a_single_file_can_be_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.txt", "- {name: a, triggers: [t], command: ls}\n")
    config = load_config(path)
    assert config.files == (str(path),) and [j.name for j in config.jobs] == ["a"]


def test_version_follows_content_not_place(tmp_path: Path) -> None:
    one = tmp_path / "one"
    write(one, "jobs.yml", "- {name: a, triggers: [t], command: ls}\n")
    v1 = load_config(one).version
    assert len(v1) == 12 and int(v1, 16) >= 0
    assert load_config(one).version == v1
    shutil.copytree(one, tmp_path / "two")
    assert load_config(tmp_path / "two").version == v1  # same names and bytes elsewhere: same version
    write(one, "jobs.yml", "- {name: a, triggers: [t], command: pwd}\n")
    v2 = load_config(one).version
    assert v2 != v1
    (one / "jobs.yml").rename(one / "renamed.yml")
    assert load_config(one).version not in (v1, v2)


def test_duplicate_schedule_names_and_a_job_sharing_a_schedule_name(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yml", """\
        - {name: nightly, triggers: [t], command: ls}
        - {schedule: nightly, every: 1h, message: t}
        - {schedule: nightly, every: 2h, message: t}
    """)
    assert errors_of(path) == [
        f"{path}:2:4: schedule 'nightly': duplicate schedule name 'nightly' (also defined at {path}:3:4)",
        f"{path}:3:4: schedule 'nightly': duplicate schedule name 'nightly' (also defined at {path}:2:4)",
    ]


def test_duplicates_are_found_even_when_the_entries_have_other_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "d.yml", "- {name: a, triggers: [t], command: ls}\n- {name: a, triggers: [t]}\n")
    assert errors_of(path) == [
        f"{path}:1:4: job 'a': duplicate job name 'a' (also defined at {path}:2:4)",
        f"{path}:2:3: job 'a': missing required key 'command'",
        f"{path}:2:4: job 'a': duplicate job name 'a' (also defined at {path}:1:4)",
    ]


# -- valid definitions ----------------------------------------------------------------------------------

def test_examples_load_without_errors() -> None:
    config, problems = validate(EXAMPLES)
    assert config is not None, [str(p) for p in problems]
    assert {p.severity for p in problems} <= {"warning"}
    names = {j.name for j in config.jobs}
    assert {"example_job", "step_1", "step_2", "step_3", "step_4", "step_5"} <= names
    assert {"etl_fetch", "etl_transform", "etl_load_primes", "etl_load_counts", "etl_report"} <= names
    assert [s.name for s in config.schedules] == ["etl_hourly"]
    # only the intended warning: a terminal message (jobs started from outside are not warned about)
    assert sorted(p.job or "" for p in problems) == ["example_job"]
    assert [p.location for p in problems] == [config.by_name[p.job or ""].location for p in problems]
    assert sum("'shell.print.message.test'" in p.message for p in problems) == 1


def test_examples_keep_the_originals_shape() -> None:
    config = load_config(EXAMPLES)
    job = config.job("example_job")
    assert job is not None
    assert (job.command, job.triggers, job.log, job.messages) == (
        ("env",), ("shell.print.env",), "$HOME/angora/logs/", ("shell.print.message.test",))
    step_1, step_4 = config.job("step_1"), config.job("step_4")
    assert step_1 is not None and step_4 is not None
    assert step_1.messages == ("example.step.2", "example.step.3", "example.step.4")
    assert len(step_4.triggers) == 3
    report = config.job("etl_report")
    assert report is not None and report.parent_success
    assert all(j.log == "$HOME/angora/logs/" for j in config.jobs)


def test_job_defaults() -> None:
    jobs, schedules, problems = parse_text("- name: a\n  triggers: [t]\n  command: echo hi\n", "j.yml")
    assert problems == [] and schedules == []
    assert jobs == [JobDef(name="a", triggers=("t",), command=("echo", "hi"))]
    job = jobs[0]
    assert (job.log, job.messages, job.replay, job.parent_success, job.description, job.timeout, job.queue,
            job.env, job.cwd, job.params, job.concurrency, job.replay_delay) == (
        None, (), None, False, "", None, "default", {}, None, {}, None, 1.0)
    assert job.location == Location("j.yml", 1, 3)


def test_every_job_field() -> None:
    text = """\
        - name: full
          triggers: [a.*, b.#]
          command: [sh, -c, 'echo "$X" | tr a b']
          log: $HOME/angora/logs/
          messages: [c.d]
          replay: 3
          parent_success: true
          description: all the fields
          timeout: 2h
          queue: high.prio-1
          env: {LANG: C, PORT: 8080, MODE: 0755, FLAG: yes}
          cwd: /tmp
          params: {TARGET: db1, N: 5}
          concurrency: 2
          replay_delay: 250ms
          on_failure: [c.d]
          approval: true
          approval_timeout: 1h
          on_approval_timeout: approve
          parent_success: false
    """
    _, _, problems = parse_text(textwrap.dedent(text), "f.yml")
    assert [p.message for p in problems] == [
        "duplicate key 'parent_success' (first at line 7, column 3); YAML would silently keep only the last one"]
    jobs, _, problems = parse_text(textwrap.dedent(text).rsplit("  parent_success: false", 1)[0], "f.yml")
    assert problems == []
    assert jobs[0].to_json() | {"location": None} == {
        "name": "full", "triggers": ["a.*", "b.#"], "command": ["sh", "-c", 'echo "$X" | tr a b'],
        "log": "$HOME/angora/logs/", "messages": ["c.d"], "replay": 3, "parent_success": True,
        "description": "all the fields", "timeout": 7200.0, "queue": "high.prio-1",
        "env": {"LANG": "C", "PORT": "8080", "MODE": "0755", "FLAG": "yes"},  # the text as written
        "cwd": "/tmp", "params": {"TARGET": "db1", "N": "5"}, "concurrency": 2, "replay_delay": 0.25,
        "on_failure": ["c.d"], "approval": True, "approval_timeout": 3600.0, "on_approval_timeout": "approve",
        "location": None}


@pytest.mark.parametrize("text, argv", [
    ('echo "HELLO WORLD"', ("echo", "HELLO WORLD")),
    ("cp $HOME/a '/tmp/b c'", ("cp", "$HOME/a", "/tmp/b c")),  # not expanded at load time
    ("[sleep, 5]", ("sleep", "5")),
    ("[printf, '%s\\n', 1.50, yes]", ("printf", "%s\\n", "1.50", "yes")),
    ("- sh\n    - -c\n    - 'a | b; c'", ("sh", "-c", "a | b; c")),
])
def test_command_forms(text: str, argv: tuple[str, ...]) -> None:
    jobs, _, problems = parse_text(f"- name: a\n  triggers: [t]\n  command:\n    {text}\n", "c.yml")
    assert problems == [] and jobs[0].command == argv


@pytest.mark.parametrize("text, seconds", [
    ("30", 30.0), ("1.5", 1.5), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0),
    ("250ms", 0.25), ('"45"', 45.0), ("1:30", 90.0),  # YAML 1.1 reads 1:30 as 90
])
def test_duration_forms(text: str, seconds: float) -> None:
    jobs, _, problems = parse_text(f"- {{name: a, triggers: [t], command: ls, timeout: {text}, "
                                   f"replay_delay: {text}}}\n", "d.yml")
    assert problems == [] and (jobs[0].timeout, jobs[0].replay_delay) == (seconds, seconds)


def test_replay_delay_may_be_zero_and_null_means_default() -> None:
    jobs, _, problems = parse_text("- {name: a, triggers: [t], command: ls, replay_delay: 0, replay: 0, "
                                   "timeout: null, queue: ~, description: }\n", "z.yml")
    assert problems == []
    assert (jobs[0].replay_delay, jobs[0].replay, jobs[0].timeout, jobs[0].queue, jobs[0].description) == (
        0.0, 0, None, "default", "")


def test_schedule_fields_and_defaults() -> None:
    text = """\
        - schedule: nightly_backup
          cron: "5 1 * * *"
          timezone: Europe/Paris
          message: backup.start
          params: {TARGET: db1}
          catchup: once
          overlap: forbid
          description: the nightly backup
        - schedule: often
          every: 30m
          message: backup.start
    """
    jobs, schedules, problems = parse_text(textwrap.dedent(text), "s.yml")
    assert problems == [] and jobs == []
    assert schedules == [
        ScheduleDef(name="nightly_backup", message="backup.start", cron="5 1 * * *", timezone="Europe/Paris",
                    params={"TARGET": "db1"}, catchup="once", overlap="forbid", description="the nightly backup"),
        ScheduleDef(name="often", message="backup.start", every=1800.0),
    ]
    assert schedules[1].timezone == "UTC" and schedules[1].catchup == "skip" and schedules[1].overlap == "allow"
    assert schedules[0].location == Location("s.yml", 1, 3)


def test_merge_keys_share_settings() -> None:
    text = """\
        - &defaults
          name: first
          triggers: [t]
          command: ls
          queue: batch
          timeout: 5m
        - <<: *defaults
          name: second
          timeout: 1m
    """
    jobs, _, problems = parse_text(textwrap.dedent(text), "m.yml")
    assert problems == []
    assert [(j.name, j.queue, j.timeout) for j in jobs] == [("first", "batch", 300.0), ("second", "batch", 60.0)]


def test_parse_text_keeps_valid_entries_next_to_broken_ones() -> None:
    jobs, _, problems = parse_text("- {name: ok, triggers: [t], command: ls}\n- {name: bad, triggers: []}\n",
                                   "p.yml")
    assert [j.name for j in jobs] == ["ok"]
    assert [str(p) for p in problems] == [
        "p.yml:2:3: job 'bad': missing required key 'command'",
        "p.yml:2:25: job 'bad': 'triggers' must not be empty",
    ]


# -- warnings -----------------------------------------------------------------------------------------

def warnings_of(tmp_path: Path, text: str) -> list[str]:
    """The warning texts for one valid file, paths relative to `tmp_path`."""
    config, problems = validate(write(tmp_path, "w.yml", text))
    assert config is not None and list(config.warnings) == problems
    return [str(p).replace(f"{tmp_path}/", "") for p in problems]


def test_no_warnings_for_a_connected_workflow_started_by_a_schedule(tmp_path: Path) -> None:
    assert warnings_of(tmp_path, """\
        - {name: fetch, triggers: [etl.start], command: ls, messages: [etl.fetched]}
        - {name: load, triggers: ["etl.*"], command: ls}
        - {schedule: hourly, every: 1h, message: etl.start}
    """) == []


def test_warnings_for_dead_messages_and_cycles_not_for_entry_jobs(tmp_path: Path) -> None:
    # the texts are graph.Graph.warnings()'s; here: which warnings, where, and that they do not stop loading.
    # `lonely` and `ping` start from outside (nothing in the files sends their triggers): that is how a workflow
    # begins, so no warning says so.
    got = warnings_of(tmp_path, """\
        - {name: lonely, triggers: [nobody.sends.this], command: ls, messages: [nobody.listens]}
        - {name: ping, triggers: [ping, start], command: ls, messages: [pong]}
        - {name: pong, triggers: [pong], command: ls, messages: [ping]}
        - {name: self, triggers: [again], command: ls, messages: [again]}
        - {schedule: tick, every: 1m, message: start}
    """)
    assert [w.split(": ")[:3] for w in got] == [
        ["w.yml:1:4", "warning", "job 'lonely'"],
        ["w.yml:2:4", "warning", "job 'ping'"],
        ["w.yml:4:4", "warning", "job 'self'"],
    ]
    assert "'nobody.listens'" in got[0]
    assert "cycle" in got[1] and "pong" in got[1] and "cycle" in got[2]


def test_warnings_do_not_stop_loading(tmp_path: Path) -> None:
    write(tmp_path, "w.yml", "- {name: a, triggers: [t], command: ls, messages: [unheard]}\n")
    config = load_config(tmp_path)
    assert [(p.severity, p.job, p.location) for p in config.warnings] == [
        ("warning", "a", Location(str(tmp_path / "w.yml"), 1, 4))]
