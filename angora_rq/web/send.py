"""`POST /send`: the original way in (`curl -d "msg=time.0105" http://host/send`), form or JSON."""
from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, jsonify, request
from werkzeug.datastructures import MultiDict

from angora_rq.store.bus import send as bus_send
from angora_rq.store.replication import wait_command
from angora_rq.store.connection import redis_errors
from angora_rq.core.errors import InvalidInput
from angora_rq.core.messages import Message

bp = Blueprint("send", __name__)

JSON_FIELDS = frozenset({"msg", "params", "run_id"})
FORM_FIELDS = frozenset({"msg", "params", "run_id", "csrf_token"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
PARAM_PREFIX = "param."


def json_body() -> Any:
    """The request body parsed as JSON (None when it is not valid JSON); InvalidInput when empty or not JSON."""
    if not request.get_data(cache=True):
        raise InvalidInput("the request body is empty; send a JSON object")
    if not request.is_json:
        raise InvalidInput("send the body as JSON (Content-Type: application/json)",
                           detail={"content_type": request.mimetype or None})
    return request.get_json(silent=True)


def json_object(allowed: frozenset[str], required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object with only `allowed` keys; {} for an empty optional body."""
    if not required and not request.get_data(cache=True):
        return {}
    return object_fields(json_body(), allowed)


def object_fields(body: Any, allowed: frozenset[str]) -> dict[str, Any]:
    """`body` (parsed JSON) if it is an object with only `allowed` keys and valid Unicode, else InvalidInput."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)[:200]}", detail={"allowed": sorted(allowed)})
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates: JSON allows them, commands' environments cannot hold them
        raise InvalidInput("the request body has text that is not valid Unicode") from e
    return body


def json_message(body: Any) -> Message:
    """A message from a parsed JSON body: {msg, params, run_id}."""
    fields = object_fields(body, JSON_FIELDS)
    return Message.create(fields.get("msg"), fields.get("params"), fields.get("run_id"), origin="http")


def form_message(form: MultiDict) -> Message:
    """A message from form fields: msg, run_id, params (a JSON object) and/or param.KEY=VALUE."""
    unknown = sorted(k for k in form if k not in FORM_FIELDS and not k.startswith(PARAM_PREFIX))
    if unknown:
        raise InvalidInput(f"unknown form field(s): {', '.join(unknown)[:200]}",
                           detail={"allowed": sorted(FORM_FIELDS | {PARAM_PREFIX + "KEY"})})
    params: dict[str, Any] = {}
    if form.get("params"):
        try:
            params = json.loads(form["params"])
        except ValueError as e:
            raise InvalidInput("form field 'params' is not valid JSON", detail=str(e)) from e
        if not isinstance(params, dict):
            raise InvalidInput("form field 'params' must be a JSON object of name -> string value")
    for key in form:
        if key.startswith(PARAM_PREFIX):
            values = form.getlist(key)
            if len(values) > 1:
                raise InvalidInput(f"form field {key[:80]!r} is given more than once")
            params[key[len(PARAM_PREFIX):]] = values[0]
    return Message.create(form.get("msg"), params, form.get("run_id") or None, origin="http")


def message_from_request() -> Message:
    """A validated message from a JSON or form body (InvalidInput otherwise)."""
    if request.mimetype in FORM_TYPES:
        return form_message(request.form)
    return json_message(json_body())


def accept(msg: Message, ext: Any = None) -> dict[str, str]:
    """Put a root message on the bus (503 when Redis is down/full or over the backlog budget)."""
    from angora_rq.web import angora

    ext = ext or angora()
    with redis_errors():
        entry = bus_send(ext.r, ext.keys, msg, backlog=ext.settings.backlog, wait=wait_command(ext.settings))
    return {"run_id": msg.run_id, "message_id": entry}


@bp.post("/send")
def send() -> Any:
    """Accept a message: 202 {run_id, message_id}."""
    return jsonify(accept(message_from_request())), 202
