"""`POST /send`: the original way in (`curl -d "msg=time.0105" http://host/send`), form or JSON.

A message that starts a fresh run, when this process's definitions are the matchers' version, is dispatched in
the same atomic call that accepts it (`direct_jobs`): its executions are queued with no stream entry and no matcher
hop (its message_id is then `direct:<run id>`); any other goes on the stream for a matcher.

An `Idempotency-Key` header (or a `key` field) makes a send idempotent: a repeat within ANGORA_IDEMPOTENCY_TTL
(24 h) gets the first answer back, with `Idempotent-Replayed: true`, and sends nothing (store/lua/send.lua).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Protocol

from flask import Blueprint, current_app, jsonify, request

from angora_rq.store.dispatch import submit_direct
from angora_rq.store.replication import wait_command
from angora_rq.store.connection import redis_errors
from angora_rq.core.errors import InvalidInput
from angora_rq.core.events import is_event
from angora_rq.core.messages import Message, check_idempotency_key
from angora_rq.core.model import JobDef
from angora_rq.core.plans import run_plan_json
from angora_rq.core.pressure import Burst
from angora_rq.core.security import parse_json
from angora_rq.core.snapshot import Snapshot
from angora_rq.store.metrics import count_refused

bp = Blueprint("send", __name__)

JSON_FIELDS = frozenset({"msg", "params", "run_id", "key"})
FORM_FIELDS = frozenset({"msg", "params", "run_id", "key", "csrf_token"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
PARAM_PREFIX = "param."
KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class Submission:
    """A message to send, with the idempotency key it came with ("" for none)."""

    msg: Message
    key: str = ""


def idempotency_key(header: Optional[str], field: Any = None) -> str:
    """The request's idempotency key: the header's, or the body's `key` field (empty: none); both must agree.

    The header may be a structured-field string, quoted as the IETF draft writes it (`"8e03978e-..."`).
    """
    key = ""
    if header is not None:
        header = header.strip()
        if len(header) >= 2 and header[0] == header[-1] == '"':
            header = header[1:-1]
        key = check_idempotency_key(header)
    if field not in (None, ""):
        if not isinstance(field, str):
            raise InvalidInput("the field 'key' must be a string (an idempotency key)")
        if key and field != key:
            raise InvalidInput(f"the {KEY_HEADER} header and the 'key' field differ; send one of them")
        key = check_idempotency_key(field)
    return key


def json_body() -> Any:
    """The request body parsed as JSON; InvalidInput when empty, not JSON, or beyond core.security's limits."""
    data = request.get_data(cache=True)
    if not data:
        raise InvalidInput("the request body is empty; send a JSON object")
    if not request.is_json:
        raise InvalidInput("send the body as JSON (Content-Type: application/json)",
                           detail={"content_type": request.mimetype or None})
    return parse_json(data)


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


def json_message(body: Any, header_key: Optional[str] = None) -> Submission:
    """A message from a parsed JSON body: {msg, params, run_id, key}."""
    fields = object_fields(body, JSON_FIELDS)
    key = idempotency_key(header_key, fields.get("key"))
    return Submission(Message.create(fields.get("msg"), fields.get("params"), fields.get("run_id"), origin="http"),
                      key)


class FormFields(Protocol):
    """What form_message reads of a form: werkzeug's MultiDict (Flask's request.form), or the fast lane's
    intake.Fields."""

    def __iter__(self) -> Iterator[str]: ...
    def get(self, key: str) -> Optional[str]: ...
    def getlist(self, key: str) -> list[str]: ...


def form_message(form: FormFields, header_key: Optional[str] = None) -> Submission:
    """A message from form fields: msg, run_id, key, params (a JSON object) and/or param.KEY=VALUE."""
    unknown = sorted(k for k in form if k not in FORM_FIELDS and not k.startswith(PARAM_PREFIX))
    if unknown:
        raise InvalidInput(f"unknown form field(s): {', '.join(unknown)[:200]}",
                           detail={"allowed": sorted(FORM_FIELDS | {PARAM_PREFIX + "KEY"})})
    params: dict[str, Any] = {}
    given = form.get("params")
    if given:
        try:
            params = parse_json(given)
        except InvalidInput as e:
            raise InvalidInput(f"form field 'params': {e.message}", detail=e.detail) from e
        if not isinstance(params, dict):
            raise InvalidInput("form field 'params' must be a JSON object of name -> string value")
    for key in form:
        if key.startswith(PARAM_PREFIX):
            values = form.getlist(key)
            if len(values) > 1:
                raise InvalidInput(f"form field {key[:80]!r} is given more than once")
            params[key[len(PARAM_PREFIX):]] = values[0]
    idem = idempotency_key(header_key, form.get("key"))
    return Submission(Message.create(form.get("msg"), params, form.get("run_id") or None, origin="http"), idem)


def message_from_request() -> Submission:
    """A validated message from a JSON or form body and the Idempotency-Key header (InvalidInput, counted, if not)."""
    try:
        if request.mimetype in FORM_TYPES:
            return form_message(request.form, request.headers.get(KEY_HEADER))
        return json_message(json_body(), request.headers.get(KEY_HEADER))
    except InvalidInput:
        ext = current_app.extensions["angora"]
        count_refused(ext.r, ext.keys, "invalid")
        raise


BURST = Burst()  # this process's recent sends


def direct_jobs(snap: Optional[Snapshot], msg: Message) -> list[JobDef]:
    """The jobs this process may dispatch a root message to itself, in the call that accepts it (store/dispatch.py
    submit_direct: no stream entry, no matcher hop); [] when it goes on the stream for a matcher instead: our
    definitions are not the matchers' (`snap` None: Angora.matched_snapshot), the message joins an existing run (a
    plan to merge), its topic is an event's, no job takes it, or a parent_success join does (joins read the run)."""
    if snap is None or not msg.new_run or is_event(msg.topic):
        return []
    jobs = list(snap.lookup(msg.topic))
    return [] if any(job.parent_success for job in jobs) else jobs


def accept(sub: Submission, ext: Any) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Accept a root message: dispatched at once when it can be (`direct_jobs`), else put on the bus. The answer's
    body and extra headers (503 when Redis is down or full, or a budget is used up: core/pressure.py; 409 when its
    idempotency key was used for another message)."""
    snap = ext.matched_snapshot()
    listened = ext.dispatcher.events.known()  # None until this process has read who listens: SEND looks itself
    # In a burst the matcher's batches cost Redis less per message than dispatching each one here (core/pressure.py);
    # a direct dispatch needs to know who listens (DISPATCH has no way to look itself).
    jobs = [] if BURST.note(time.monotonic()) or listened is None else direct_jobs(snap, sub.msg)
    with redis_errors():
        if snap is not None and jobs:
            sent = submit_direct(ext.r, ext.keys, sub.msg, ext.dispatcher, jobs, run_plan_json(snap, sub.msg.topic),
                                 snap.version, ext.pressure.budget(), sub.key, ext.settings.idempotency_ttl,
                                 wait=wait_command(ext.settings))
        else:
            sent = ext.sends.submit(sub.msg, sub.key, listened)
    body: dict[str, Any] = {"run_id": sent.run_id, "message_id": sent.message_id}
    if not sub.key:
        return body, []
    body["replayed"] = sent.replayed
    return body, [(REPLAYED_HEADER, "true")] if sent.replayed else []


def answer_send() -> Any:
    """The view of /send and /api/v1/messages: 202 {run_id, message_id[, replayed]}."""
    body, headers = accept(message_from_request(), current_app.extensions["angora"])
    return jsonify(body), 202, headers


@bp.post("/send")
def send() -> Any:
    """Accept a message: 202 {run_id, message_id}."""
    return answer_send()
