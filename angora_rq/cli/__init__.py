"""The `angora` command line: the click group (`group.main`) with every command module registered on it."""
from angora_rq.cli import definitions_cmds, engine_cmds, ops_cmds, up_cmds, web_cmds  # noqa: F401 (they register)
from angora_rq.cli.group import main

__all__ = ["main"]
