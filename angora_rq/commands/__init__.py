"""Commands: starting a job's command as a process, its timeout and kill, and the guardian that outlives a worker.

No Redis: a worker hands these a CommandSpec (core/command.py) and records the Outcome through the store.
"""
