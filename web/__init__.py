"""The Flask web app (UI + JSON API), installed as angora_rq.web."""
from __future__ import annotations
