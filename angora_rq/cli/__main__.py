"""`python -m angora_rq.cli` runs the `angora` command."""
from angora_rq.cli import main

main(prog_name="angora")
