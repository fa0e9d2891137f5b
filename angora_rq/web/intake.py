"""The fast lane of `POST /send` and `POST /api/v1/messages`: a script's message accepted without Flask's stack.

Through Flask a message cost ~690 us of CPU in-process, most of it Werkzeug's form parsing, the request context, the
hooks and the response object; through this lane ~205 (bench/README.md). This WSGI middleware answers the common
request itself: a form or JSON body from a script (no browser headers with auth off; a valid Bearer token from an
address not throttled with auth on) to a Host the app answers to, parsed by the same validators as the Flask views
(web/send.py), its Idempotency-Key header included. Everything else, including every request that does not
validate (a malformed key too), goes to Flask unchanged, so each error and edge case keeps a single
implementation. An error
raised while sending is handed to Flask too (`hand_over`), so its answer is the one Flask's error handlers give.
"""
from __future__ import annotations

import io
import json
from typing import Any, Callable, Iterable, Iterator, Optional
from urllib.parse import parse_qs

from flask import Flask, request

from angora_rq.core.security import host_allowed, parse_json
from angora_rq.store.link import release_link
from angora_rq.store.websec import login_wait
from angora_rq.web.auth import LOGIN_LIMIT, same_secret
from angora_rq.web.guard import BROWSER_HEADERS, SECURITY_HEADERS
from angora_rq.web.send import KEY_HEADER, Submission, accept, form_message, json_message

PATHS = frozenset({"/send", "/api/v1/messages"})
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
BROWSER_KEYS = tuple("HTTP_" + h.upper().replace("-", "_") for h in BROWSER_HEADERS)
KEY_ENVIRON = "HTTP_" + KEY_HEADER.upper().replace("-", "_")
HANDED_OVER = "angora.intake.error"  # an environ key; clients cannot set it (their headers become HTTP_*)
ACCEPTED_HEADERS = (("Content-Type", "application/json"), *SECURITY_HEADERS, ("Cache-Control", "no-store"))

StartResponse = Callable[..., Any]


class Intake:
    """WSGI middleware in front of the Flask app; install with `install(app)`."""

    def __init__(self, app: Flask) -> None:
        self.flask = app.wsgi_app
        self.ext = app.extensions["angora"]
        self.settings = self.ext.settings
        self.hosts = app.extensions["angora_hosts"]
        self.max_body = int(app.config.get("MAX_CONTENT_LENGTH") or 0)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") not in PATHS:
            return self.flask(environ, start_response)
        length = self._length(environ)
        if length is None or not host_allowed(environ.get("HTTP_HOST", ""), self.hosts) or \
                not self._from_script(environ):
            return self.flask(environ, start_response)
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)  # Flask reads it again when the request is not ours
        sub = (parse(environ.get("CONTENT_TYPE", ""), body, environ.get(KEY_ENVIRON)) if len(body) == length
               else None)
        if sub is None:
            return self.flask(environ, start_response)
        try:
            answer, headers = accept(sub, self.ext)
        except Exception as e:  # noqa: BLE001 - answered by Flask's error handlers, like any view's error
            environ[HANDED_OVER] = e
            return self.flask(environ, start_response)
        finally:
            release_link(self.ext.r)
        payload = json.dumps(answer, separators=(",", ":")).encode() + b"\n"  # byte for byte what jsonify writes
        start_response("202 ACCEPTED", [*ACCEPTED_HEADERS, *headers, ("Content-Length", str(len(payload)))])
        return [payload]

    def _length(self, environ: dict[str, Any]) -> Optional[int]:
        """The body's declared length, when it is a plain number within the app's limit."""
        text = environ.get("CONTENT_LENGTH", "")
        if not text.isdigit() or not text.isascii():
            return None
        length = int(text)
        return length if 0 < length and (not self.max_body or length <= self.max_body) else None

    def _from_script(self, environ: dict[str, Any]) -> bool:
        """What auth.authenticate + guard.protect_csrf let through with no session: a Bearer token from an address
        that has not failed too often (one Redis read), or no browser."""
        if self.settings.auth_enabled:
            scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            if scheme.lower() != "bearer" or not same_secret(value.strip(), self.settings.auth_token):
                return False
            client = environ.get("REMOTE_ADDR") or "unknown"
            try:
                return login_wait(self.ext.r, self.ext.keys, client, LOGIN_LIMIT) == 0
            except Exception:  # noqa: BLE001 - Redis trouble: Flask meets it again and answers it
                return False
        return not any(key in environ for key in BROWSER_KEYS)


class Fields:
    """A form's fields by name, each with its values in order (urllib's parse_qs): what form_message reads of
    werkzeug's MultiDict, whose get() raises and catches a BadRequestKeyError (an HTTPException built) for each
    field a form leaves out: three per plain `msg=...` body."""

    def __init__(self, values: dict[str, list[str]]) -> None:
        self._values = values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def get(self, key: str) -> Optional[str]:
        """The field's first value, or None."""
        values = self._values.get(key)
        return values[0] if values else None

    def getlist(self, key: str) -> list[str]:
        return list(self._values.get(key, ()))


def parse(content_type: str, body: bytes, key: Optional[str] = None) -> Optional[Submission]:
    """The message of a plain form or JSON body (and its Idempotency-Key header), or None when Flask should look
    at it (any doubt, any error: a malformed key too)."""
    mimetype = content_type.partition(";")[0].strip().lower()
    try:
        if mimetype == FORM:
            return form_message(Fields(parse_qs(body.decode(), keep_blank_values=True, errors="strict")), key)
        if mimetype == JSON:
            return json_message(parse_json(body), key)
    except Exception:  # noqa: BLE001 - whatever it is, the Flask view reports it the one way it always does
        return None
    return None


def hand_over() -> None:
    """before_request: raise the error the fast lane met while sending, so Flask answers it."""
    error = request.environ.get(HANDED_OVER)
    if error is not None:
        raise error


def install(app: Flask) -> None:
    """Put the fast lane in front of `app` (after its other before_request hooks: auth runs first)."""
    app.before_request(hand_over)
    app.wsgi_app = Intake(app)  # type: ignore[method-assign]
