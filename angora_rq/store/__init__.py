"""The store: the only code that talks to Redis (connection, Link, Lua scripts, bus, state, reads, steering).

Every key name comes from core/keys.py and every hash field from core/schema.py.
"""
