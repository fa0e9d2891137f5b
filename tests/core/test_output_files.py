"""Outputs file names in a spool folder, and the execution each belongs to (pure)."""
from __future__ import annotations

from angora_rq.core.outputs import execution_of, output_file


def test_a_file_name_gives_back_its_execution_and_no_other_name_does() -> None:
    path = output_file("/spool/", "0123abcd")
    assert path == "/spool/0123abcd.output"
    assert execution_of(path.rsplit("/", 1)[1]) == "0123abcd"
    for other in ("notes.txt", "not an id.output", ".output", "x.output.tmp", "a" * 65 + ".output", "x.outputs"):
        assert execution_of(other) is None, other
