"""Definitions: YAML files -> a validated Config (file:line:col problems), held as a Snapshot, reloaded whole.

Reads files; talks to no Redis (the reload-request counter is read through a callable the caller passes).
"""
