"""Property-based API tests: schemathesis drives every documented operation of the served OpenAPI document.

Zero server errors, and every response conforms to the document (status, content type, body schema);
with auth on, also that requests without credentials are refused.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings

from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.web import create_app
from angora_rq.web.openapi import document

TOKEN = "schemathesis-token"
JOBS = """\
- name: extract
  triggers: [etl.start]
  command: echo extract
  messages: [etl.extracted]
- name: load
  triggers: [etl.extracted]
  command: echo load
"""
EXAMPLES = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def make_app(redis_url: str, keys: Keys, tmp_path: Path, **overrides: Any) -> Flask:
    """An app on this test's Redis db and prefix, with a workflow and one run already in Redis."""
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "jobs.yml").write_text(JOBS)
    fields: dict[str, Any] = dict(redis_url=redis_url, prefix=keys.prefix, config_path=config,
                                  data_dir=tmp_path / "data", backlog=1_000_000)
    fields.update(overrides)
    app = create_app({"SETTINGS": Settings(**fields)})
    ext = app.extensions["angora"]
    ext.control.run_job(ext.snapshot(), "extract", {"DAY": "mon"})
    return app


@pytest.fixture
def open_app(redis_url: str, keys: Keys, tmp_path: Path) -> Flask:
    """The app without auth."""
    return make_app(redis_url, keys, tmp_path)


@pytest.fixture
def auth_app(redis_url: str, keys: Keys, tmp_path: Path) -> Flask:
    """The app with a token."""
    return make_app(redis_url, keys, tmp_path, auth_token=TOKEN)


# Loaded from the same dict the app serves (test_served_document_is_the_document checks that), because
# schemathesis' fixture-based lazy loader does not run under pytest 9 (it sets a removed Node attribute).
open_api = schemathesis.openapi.from_dict(document())
auth_api = schemathesis.openapi.from_dict(document(auth=True))


def one_key(context: Any, case: Any) -> bool:
    """What the document cannot express: an Idempotency-Key header and a `key` field, both sent, must agree."""
    header = (case.headers or {}).get("Idempotency-Key")
    field = case.body.get("key") if isinstance(case.body, dict) else None
    return header is None or field in (None, "") or field == header.strip().strip('"')


for api in (open_api, auth_api):
    api.hook("filter_case")(one_key)


def test_served_document_is_the_document(open_app: Flask, auth_app: Flask) -> None:
    assert open_app.test_client().get("/api/v1/openapi.json").get_json() == json.loads(json.dumps(document()))
    served = auth_app.test_client().get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert served.get_json() == json.loads(json.dumps(document(auth=True)))


@open_api.parametrize()
@EXAMPLES
def test_api_conforms_to_its_document(case: Any, open_app: Flask) -> None:
    case.operation.schema.app = open_app  # where schemathesis' own probes go too
    case.call_and_validate(app=open_app)


@auth_api.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_with_auth_conforms_and_refuses_anonymous_calls(case: Any, auth_app: Flask) -> None:
    case.operation.schema.app = auth_app
    case.call_and_validate(app=auth_app, headers={"Authorization": f"Bearer {TOKEN}"})
