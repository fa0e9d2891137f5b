"""A command's outputs: `KEY=VALUE` lines it writes to the file named by `$ANGORA_OUTPUT` (pure: no I/O).

They are recorded on the execution and become params of the messages the job sends, so they follow the rules of
params (core/messages.py); anything else fails the execution with a reason saying what to fix.
"""
from __future__ import annotations

import re
from typing import Optional

from angora_rq.core.errors import InvalidInput
from angora_rq.core.messages import MAX_PARAMS_TOTAL, PARAM_NAME_RE, check_params

OUTPUT_VAR = "ANGORA_OUTPUT"
MAX_OUTPUT = MAX_PARAMS_TOTAL  # bytes of the file: 16 KiB, what the params of one message may hold in all
SUFFIX = ".output"
_FILE_NAME = re.compile(r"^([A-Za-z0-9_-]{1,64})" + re.escape(SUFFIX) + "$")


def output_file(spool_dir: str, execution_id: str) -> str:
    """Where an execution's command writes its outputs (in its worker's spool folder)."""
    return f"{spool_dir.rstrip('/')}/{execution_id}{SUFFIX}"


def execution_of(file_name: str) -> Optional[str]:
    """The execution whose outputs file `file_name` (a name in a spool folder) is, or None for any other name."""
    m = _FILE_NAME.match(file_name)
    return m.group(1) if m else None


def parse_outputs(data: bytes) -> dict[str, str]:
    """The outputs in a file's bytes: one `KEY=VALUE` per line (blank lines skipped, the last value of a name
    wins); InvalidInput, whose message completes "output: ...", for anything else."""
    if not data:
        return {}
    if len(data) > MAX_OUTPUT:
        raise InvalidInput(f"${OUTPUT_VAR} holds more than {MAX_OUTPUT} bytes; pass bigger values in files")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"${OUTPUT_VAR} is not UTF-8 text (byte {e.start})") from None
    out: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        name, eq, value = line.partition("=")
        if not eq:
            raise InvalidInput(f"line {number} of ${OUTPUT_VAR} has no '=' (write KEY=VALUE lines): {line[:60]!r}")
        if not PARAM_NAME_RE.match(name):
            raise InvalidInput(f"line {number} of ${OUTPUT_VAR}: name {name[:60]!r} is not valid (letters, digits "
                               "and _, not starting with a digit, at most 64 characters)")
        out.pop(name, None)  # a name written again moves to the end, with its last value
        out[name] = value
    try:
        return check_params(out)
    except InvalidInput as e:
        raise InvalidInput(f"${OUTPUT_VAR}: {e.message}") from None
