"""`python -m angora_rq.cli` runs the `angora` command."""
from . import main

main(prog_name="angora")
