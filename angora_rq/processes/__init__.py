"""The long-running roles (matcher, worker, janitor, scheduler), the supervisor of `angora up` and its Redis.

Each loop reads input, asks the core what to do, and acts through the store: `step()` one batch, `run()` loops.
"""
