"""The `angora` command line: the click group (`group.main`) with every command module registered on it."""
from angora_rq.cli import (  # noqa: F401 (they register)
    definitions_cmds, doctor_cmds, engine_cmds, ops_cmds, steer_cmds, up_cmds, web_cmds)
from angora_rq.cli.group import main

__all__ = ["main"]
