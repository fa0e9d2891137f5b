"""Angora: Linux commands declared in YAML, triggered by messages over Redis streams and RQ."""
from __future__ import annotations

__version__ = "0.1.0"
