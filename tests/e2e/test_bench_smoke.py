"""The benchmark still runs and counts what it claims to (no timing is asserted: speed lives in bench/)."""
from __future__ import annotations

import json
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
