"""The OpenAPI 3.1 document of the JSON API, `/send` and `/healthz` (hand-written; checked by schemathesis)."""
from __future__ import annotations

from typing import Any

from angora_rq.core.messages import MAX_KEY, MAX_PARAM_VALUE, MAX_PARAMS, MAX_TOPIC

REF = "#/components/schemas/"
TOPIC_PATTERN = r"^[A-Za-z0-9_\-:/@+=]+(\.[A-Za-z0-9_\-:/@+=]+)*$"
PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
RUN_ID_OR_EMPTY = r"^([A-Za-z0-9_\-]{1,64})?$"
NO_NUL = "^[^\\u0000]*$"
FORM = "application/x-www-form-urlencoded"


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": REF + name}


def nullable(type_: str) -> dict[str, Any]:
    """A JSON Schema type that may also be null."""
    return {"type": [type_, "null"]}


def obj(props: dict[str, Any], required: tuple[str, ...] | None = None, closed: bool = False) -> dict[str, Any]:
    """An object schema (every property required unless `required` says); `closed` forbids others."""
    schema: dict[str, Any] = {"type": "object", "properties": props,
                              "required": list(props if required is None else required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


def array(items: dict[str, Any]) -> dict[str, Any]:
    """An array schema."""
    return {"type": "array", "items": items}


STR, INT, NUM, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
STRINGS = array(STR)
STR_MAP = {"type": "object", "additionalProperties": STR}

PARAMS_IN = {
    "type": ["object", "null"],
    "description": "Message parameters: names like environment variables, string values "
                   "(numbers are turned into strings); at most 16384 characters in all.",
    "maxProperties": MAX_PARAMS,
    "propertyNames": {"pattern": PARAM_NAME_PATTERN},
    "additionalProperties": {"anyOf": [
        {"type": "string", "maxLength": MAX_PARAM_VALUE, "pattern": NO_NUL}, {"type": "number"}]},
}
TOPIC = {"type": "string", "minLength": 1, "maxLength": MAX_TOPIC, "pattern": TOPIC_PATTERN}
RUN_ID_IN = {"type": ["string", "null"], "pattern": RUN_ID_OR_EMPTY,
             "description": "Run id to join or start (letters, digits, _ and -); empty or absent: a new one."}
KEY_PATTERN = r"^[\x20-\x7e]*$"
KEY_IN = {"type": ["string", "null"], "maxLength": MAX_KEY, "pattern": KEY_PATTERN,
          "description": "Idempotency key (as the Idempotency-Key header; empty or absent: none)."}

PROBLEM = obj({"severity": STR, "path": nullable("string"), "line": nullable("integer"), "col": nullable("integer"),
               "job": nullable("string"), "message": STR, "text": STR}, ("severity", "message", "text"))
JOB_DEF = obj({
    "name": STR, "triggers": STRINGS, "command": STRINGS, "log": nullable("string"), "messages": STRINGS,
    "on_failure": STRINGS, "approval": BOOL, "approval_timeout": nullable("number"),
    "on_approval_timeout": {"enum": ["reject", "approve"]}, "replay": nullable("integer"), "parent_success": BOOL,
    "description": STR, "timeout": nullable("number"),
    "queue": STR, "env": STR_MAP, "cwd": nullable("string"), "params": STR_MAP, "concurrency": nullable("integer"),
    "replay_delay": NUM, "location": nullable("string"),
}, ("name", "triggers", "command", "messages", "queue"))
JOB_STATS = obj({
    "last_status": nullable("string"), "last_execution": nullable("string"), "last_run": nullable("string"),
    "last_started": nullable("number"), "last_ended": nullable("number"), "last_duration": nullable("number"),
    "succeeded": INT, "failed": INT, "total": INT,
    "success_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
})
DURATIONS = obj({
    "executions": {"type": "integer", "description": "Executions kept in the job's history."},
    "finished": {"type": "integer", "description": "Of these, the ones whose command ran and ended."},
    "succeeded": INT, "success_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "p50": {"type": ["number", "null"], "description": "Median duration (s) of the finished ones."},
    "p95": {"type": ["number", "null"], "description": "95th percentile duration (s) of the finished ones."},
}, closed=True)
JOB_SUMMARY = obj({"name": STR, "description": STR, "triggers": STRINGS, "messages": STRINGS, "queue": STR,
                   "parent_success": BOOL, "paused": BOOL, "stats": ref("JobStats")}, closed=True)
EXECUTION = obj({
    "id": STR, "job": nullable("string"), "run": nullable("string"), "attempt": nullable("integer"),
    "status": nullable("string"), "queue": nullable("string"), "topic": nullable("string"),
    "origin": nullable("string"), "created": nullable("number"), "started": nullable("number"),
    "ended": nullable("number"), "duration": nullable("number"), "exit_code": nullable("integer"),
    "reason": nullable("string"), "host": nullable("string"), "worker": nullable("string"),
    "next": nullable("string"), "replay_of": nullable("string"), "config_version": nullable("string"),
    "params": STR_MAP,
}, ("id", "job", "run", "attempt", "status", "params"))
EXECUTION_DETAIL = {"allOf": [ref("Execution"), obj({
    "tail": {"type": "string", "description": "The last characters of the output (see the `tail` parameter)."},
    "tail_truncated": BOOL, "spec": {"anyOf": [ref("JobDef"), {"type": "null"}]},
    "late": {"type": ["object", "null"], "description": "An end its worker reported after the execution had been "
             "recorded or replayed (a host cut off from Redis): refused, kept here. worker, host, reason, "
             "exit_code, signal, started, ended."},
    "approval": {"type": ["string", "null"], "enum": ["approved", "rejected", None],
                 "description": "An approval gate's decision (null while it waits, or for other jobs)."},
    "decided_by": nullable("string"), "decided_at": nullable("number"),
    "approval_deadline": {"type": ["number", "null"], "description": "When approval_timeout passes."},
    "outputs": {**STR_MAP, "description": "KEY=VALUE lines the command wrote to $ANGORA_OUTPUT; the job's "
                                          "messages carry them as params."},
})]}
PLAN = {"type": "object", "required": ["jobs"], "properties": {
    "jobs": STRINGS, "parents": {"type": "object", "additionalProperties": STRINGS},
    "depth": {"type": "object", "additionalProperties": INT}, "joins": STRINGS,
    "gates": {**STRINGS, "description": "Approval gates among the jobs (present only when there are some)."},
    "failure_parents": {"type": "object", "additionalProperties": STRINGS,
                        "description": "Jobs reached through a failure branch: the planned jobs whose on_failure "
                                       "triggers them (present only when the plan has failure branches)."}}}
RUN_JOB = obj({"status": STR, "execution": nullable("string"), "executions": INT})
RUN = obj({
    "run_id": STR, "status": {"type": "string", "description": "Derived: running, succeeded, failed, ..."},
    "topic": nullable("string"), "origin": nullable("string"), "created": nullable("number"),
    "ended": {"type": ["number", "null"], "description": "When its last message or execution finished (unix time); "
                                                         "null while it runs, and for runs recorded before runs "
                                                         "kept an end time."},
    "duration": {"type": ["number", "null"], "description": "Seconds from `created` to `ended`; null while it runs "
                                                            "or when `ended` is null."},
    "params": STR_MAP, "config_version": nullable("string"), "active": INT, "canceled": BOOL, "plan": ref("Plan"),
    "rerun_of": {"type": ["string", "null"], "description": "The run this one re-runs (`rerun`)."},
    "jobs": {"type": "object", "additionalProperties": ref("RunJob"),
             "description": "Every planned or started job's status (pending included)."},
    "counts": {"type": "object", "additionalProperties": INT},
}, ("run_id", "status", "active", "canceled", "plan", "jobs"))
RUN_DETAIL = {"allOf": [ref("Run"), obj({"executions": array(ref("Execution"))})]}
GRAPH_NODE = obj({"name": STR, "triggers": STRINGS, "messages": STRINGS, "on_failure": STRINGS, "queue": STR,
                  "parent_success": BOOL, "approval": BOOL, "description": STR}, ("name", "triggers", "messages"))
GRAPH_EDGE = obj({"from": STR, "to": STR, "topic": {"type": "string", "description": "The message linking them."},
                  "kind": {"type": "string", "enum": ["message", "failure"],
                           "description": "failure: sent by the parent's on_failure, when it fails for good."}},
                 ("from", "to", "topic"))
GRAPH = obj({"nodes": array(GRAPH_NODE), "edges": array(GRAPH_EDGE), "config_version": STR})
CONFIG_STATUS = obj({
    "path": STR, "loaded": BOOL, "valid": BOOL, "version": nullable("string"), "files": STRINGS, "jobs": INT,
    "schedules": INT, "warnings": array(ref("Problem")), "errors": array(ref("Problem")),
    "matchers_version": nullable("string")}, closed=True)
PROCESS = obj({"name": STR, "last_beat": NUM, "age": NUM, "alive": BOOL}, closed=True)
HEALTH = obj({
    "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]}, "time": NUM,
    "redis": obj({"ok": BOOL, "error": nullable("string")}, ("ok",), closed=True),
    "matchers": array(ref("Process")), "workers": array(ref("Process"))}, closed=True)
ERROR = {"type": "object", "required": ["error"], "properties": {"error": STR, "detail": {}}}
PAGE = {"total": INT, "offset": INT, "limit": INT}

SCHEMAS: dict[str, Any] = {
    "Error": ERROR, "Problem": PROBLEM, "JobDef": JOB_DEF, "JobStats": JOB_STATS, "JobSummary": JOB_SUMMARY,
    "Durations": DURATIONS,
    "JobList": obj({"config_version": STR, "jobs": array(ref("JobSummary"))}, closed=True),
    "JobDetail": obj({"job": ref("JobDef"), "parents": STRINGS, "children": STRINGS, "failure_children": STRINGS,
                      "paused": BOOL,
                      "stats": ref("JobStats"), "history": ref("Durations"),
                      "executions": obj({**PAGE, "items": array(ref("Execution"))}, closed=True)}, closed=True),
    "Execution": EXECUTION, "ExecutionDetail": EXECUTION_DETAIL, "Plan": PLAN, "RunJob": RUN_JOB, "Run": RUN,
    "RunDetail": RUN_DETAIL, "RunList": obj({**PAGE, "runs": array(ref("Run"))}, closed=True),
    "Graph": GRAPH, "ConfigStatus": CONFIG_STATUS, "Process": PROCESS, "Health": HEALTH,
    "MessageRequest": obj({"msg": TOPIC, "params": PARAMS_IN, "run_id": RUN_ID_IN, "key": KEY_IN}, ("msg",),
                          closed=True),
    "MessageForm": {
        "type": "object", "required": ["msg"], "additionalProperties": False,
        "properties": {"msg": TOPIC, "run_id": {"type": "string", "pattern": RUN_ID_OR_EMPTY},
                       "key": {"type": "string", "maxLength": MAX_KEY, "pattern": KEY_PATTERN}},
        "patternProperties": {r"^param\.[A-Za-z_][A-Za-z0-9_]{0,63}$":
                              {"type": "string", "maxLength": MAX_PARAM_VALUE, "pattern": NO_NUL}},
        "maxProperties": MAX_PARAMS,
        "description": "msg, optional run_id, params as `param.KEY=VALUE` fields (a `params` field holding a "
                       "JSON object is accepted too).",
    },
    "Accepted": obj({"run_id": STR, "message_id": {
        "type": "string", "description": "The message's stream entry id (`<ms>-<seq>`), or `direct:<run_id>` when "
                                         "this server dispatched it itself (a new run whose jobs it knows: no stream "
                                         "entry)."}, "replayed": {
        "type": "boolean", "description": "With an idempotency key: true when this repeats an earlier send (the "
                                          "first answer; nothing was sent)."}}, ("run_id", "message_id"), closed=True),
    "RunRequest": obj({"params": PARAMS_IN, "run_id": RUN_ID_IN}, (), closed=True),
    "Started": obj({"run_id": STR, "execution_id": STR}, closed=True),
    "Canceled": obj({"run_id": STR, "canceled": {"const": True}, "dropped": array(STR),
                     "kill_requested": array(STR)}, closed=True),
    "Rerun": obj({
        "run_id": {"type": "string", "description": "The new run (a re-run), or the same run (failed jobs)."},
        "rerun_of": STR, "message_id": STR, "execution_id": STR,
        "executions": array(obj({"job": STR, "execution_id": STR, "rerun_of": STR}, closed=True)),
    }, ("run_id",), closed=True),
    "Killed": obj({"execution_id": STR, "result": STR}, closed=True),
    "Retried": obj({"execution_id": STR, "retry_of": STR}, closed=True),
    "Skipped": obj({"execution_id": STR, "status": {"const": "skipped"}}, closed=True),
    "DecideRequest": obj({"by": {"type": ["string", "null"], "maxLength": 100, "pattern": "^[^\\u0000-\\u001f]*$",
                                 "description": "Who decides, when auth is off (else the logged-in user)."}},
                         (), closed=True),
    "Decided": obj({"execution_id": STR, "status": {"enum": ["queued", "held", "rejected"]},
                    "approval": {"enum": ["approved", "rejected"]}, "decided_by": STR, "decided_at": NUM},
                   closed=True),
}

# -- operations (web/ops_api.py): schedules, pause/resume, reload ---------------------------------------------
BUDGET = {"used": nullable("integer"), "limit": nullable("integer"), "ratio": nullable("number"), "full": BOOL}
SCHEMAS.update({
    "Schedule": obj({
        "name": STR, "message": STR, "cron": nullable("string"), "every": nullable("number"), "timezone": STR,
        "params": STR_MAP, "catchup": {"enum": ["skip", "once"]}, "overlap": {"enum": ["allow", "forbid"]},
        "description": STR, "location": nullable("string"),
        "next_fire": {"type": ["number", "null"], "description": "Unix time of the next tick."},
        "last_tick": {"type": ["number", "null"], "description": "Unix time of the last tick sent (or skipped)."},
        "last_sent_at": nullable("number"), "last_run": nullable("string"), "last_run_active": BOOL,
        "sent": INT, "skipped": {"type": "integer", "description": "Ticks skipped (`overlap: forbid`, a budget)."},
        "last_skipped": {"type": ["number", "null"], "description": "Unix time of the last tick skipped."},
        "skip_reason": {"type": ["string", "null"], "description": "Why the last skipped tick was skipped."},
    }, closed=True),
    "Budget": obj(BUDGET, closed=True),
    "Status": obj({
        "work": {**ref("Budget"), "description": "Accepted work not finished: messages waiting for the matcher, "
                                                  "executions queued, held, delayed or running (ANGORA_BACKLOG)."},
        "memory": {**obj({**BUDGET, "source": nullable("string"), "policy": nullable("string"),
                          "warning": nullable("string")}, closed=True),
                   "description": "Redis used_memory (last reading, at most 1 s old) against the memory budget "
                                  "(source: ANGORA_MAX_MEMORY, maxmemory or system memory); Redis' "
                                  "maxmemory-policy, and a warning when it is not noeviction (a full Redis then "
                                  "deletes keys, Angora's among them, instead of refusing writes)."},
        "accepted": {"type": "integer", "description": "Messages accepted since the deployment began."},
        "history": {**obj({"since": nullable("number"), "runs": INT, "retention": {"type": "number"},
                           "trim_at": nullable("integer")}, closed=True),
                    "description": "How far back history reaches: when the oldest run kept started (unix time), "
                                   "how many runs are kept; finished runs older than `retention` seconds go, and "
                                   "the oldest go first while Redis holds more than `trim_at` bytes."},
        "data_lost": {**obj({"times": INT, "last": nullable("number")}, closed=True),
                      "description": "Times a role found Redis back after an outage without Angora's data "
                                     "(restarted without persistence, a replica promoted before it synced, flushed), "
                                     "and when the last was found (unix time)."},
    }, closed=True),
    "Leader": obj({"holder": nullable("string"), "token": nullable("integer"), "ttl": nullable("number")},
                  closed=True),
    "Delivery": obj({
        "delivery": STR, "event": STR, "run_id": nullable("string"), "attempt": INT, "time": NUM,
        "status": {"type": ["integer", "null"], "description": "The receiver's HTTP status (null: no answer)."},
        "error": STR, "duration": NUM, "outcome": {"enum": ["delivered", "retrying", "failed"]},
        "next": {"type": ["number", "null"], "description": "When the next attempt is due (retrying)."}}, closed=True),
    "Webhook": obj({"name": STR, "url": STR, "events": STRINGS, "signed": BOOL, "retries": INT, "timeout": NUM,
                    "description": STR, "location": nullable("string"),
                    "deliveries": {**array(ref("Delivery")), "description": "Latest attempts, newest first."}},
                   closed=True),
    "WebhookList": obj({"config_version": STR, "webhooks": array(ref("Webhook"))}, closed=True),
    "ScheduleList": obj({"config_version": STR, "leader": ref("Leader"), "schedules": array(ref("Schedule"))},
                        closed=True),
    "JobPause": obj({"job": STR, "paused": BOOL, "changed": BOOL, "released": INT}, ("job", "paused", "changed"),
                    closed=True),
    "QueuePause": obj({"queue": STR, "paused": BOOL, "changed": BOOL}, closed=True),
    "Paused": obj({"jobs": array(obj({"name": STR, "held": INT}, closed=True)),
                   "queues": array(obj({"name": STR, "waiting": INT}, closed=True))}, closed=True),
    "Reload": obj({"requested": INT, "config": ref("ConfigStatus")}, closed=True),
    "DeadLetters": obj({
        "total": {"type": "integer", "description": "Dead letters since the deployment began."},
        "kept": {"type": "integer", "description": "How many of the newest are kept."},
        "dead_letters": array(obj({
            "entry": {"type": "string", "description": "The message's stream entry id."},
            "fields": {**STR_MAP, "description": "The entry's fields (t topic, r run id, o origin, s sent at, "
                                                 "p params as JSON), each cut to 1,000 characters."},
            "cut": {"type": "boolean", "description": "Whether a field was cut short or left out (then it cannot "
                                                      "be sent again as it was)."},
            "error": {"type": "string", "description": "Why its dispatch failed."},
            "matcher": STR, "at": NUM}, ("entry", "fields", "cut", "error", "matcher", "at"))),
    }, closed=True),
})


def ops_paths(a: bool) -> dict[str, Any]:
    """The routes of web/ops_api.py."""
    queue = path_param("queue", "Queue name.", r"^[A-Za-z0-9_.\-]{1,100}$")

    def job_op(verb: str, summary: str) -> dict[str, Any]:
        return {"post": op(summary, ("200", "JobPause", f"{verb}."), "403 404", (JOB,), auth=a)}

    def queue_op(verb: str, summary: str) -> dict[str, Any]:
        return {"post": op(summary, ("200", "QueuePause", f"{verb}."), "400 403", (queue,), auth=a)}

    return {
        "/api/v1/status": {"get": op("How much of each budget is used; past either, new messages are refused "
                                     "with 503 and Retry-After.", ("200", "Status", "The budgets."), auth=a)},
        "/api/v1/webhooks": {"get": op("Webhooks (secrets never shown) with their latest delivery attempts.",
                                       ("200", "WebhookList", "The webhooks."), auth=a)},
        "/api/v1/schedules": {"get": op("Schedules: next fire time, last tick sent; the leading scheduler.",
                                        ("200", "ScheduleList", "The schedules."), auth=a)},
        "/api/v1/jobs/{name}/pause": job_op("Paused", "Hold the executions its messages trigger (in order)."),
        "/api/v1/jobs/{name}/resume": job_op("Resumed", "Queue what the job held, in order; run it again."),
        "/api/v1/queues/{queue}/pause": queue_op("Paused", "Workers stop taking executions from the queue."),
        "/api/v1/queues/{queue}/resume": queue_op("Resumed", "Workers take executions from the queue again."),
        "/api/v1/dead-letters": {"get": op("Messages the matchers put aside: each failed to dispatch alone, for a "
                                           "reason trying again would not change.",
                                           ("200", "DeadLetters", "The newest ones, newest first."), auth=a)},
        "/api/v1/dead-letters/{entry}/resend": {"post": op(
            "Send a dead letter's message (topic and params) again in a new run, and take it off the list; a repeat "
            "gets the first answer (`replayed`).", ("202", "Accepted", "Sent."), "403 404 409",
            (path_param("entry", "The dead letter's stream entry id."),), auth=a)},
        "/api/v1/paused": {"get": op("Paused jobs (with what they hold) and paused queues.",
                                     ("200", "Paused", "What is paused."), auth=a)},
        "/api/v1/config/reload": {"post": op(
            "Every process reads its definition files again; broken files keep the old definitions.",
            ("200", "Reload", "Requested; this process's definitions status."), "403", auth=a)},
    }


RESPONSES = {
    "400": "Bad input (the body or a parameter).", "401": "Credentials missing or wrong.",
    "403": "CSRF token missing (browser requests).", "404": "Not found.",
    "409": "The action does not fit the current state.",
    "429": "Too many failed logins from this address: wait for Retry-After seconds.",
    "503": "Redis unreachable or out of memory, a budget used up (with Retry-After; see /api/v1/status), or no "
           "valid definitions loaded.",
}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A response with a JSON body."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def op(summary: str, ok: tuple[str, str, str], errors: str = "", params: tuple = (), body: Any = None,
       auth: bool = True) -> dict[str, Any]:
    """An operation: `ok` = (status, schema name, description); `errors` = error statuses, e.g. "400 404"."""
    codes = errors.split() + (["401", "429"] if auth else []) + ["503"]
    responses = {ok[0]: json_body(ref(ok[1]), ok[2])}
    responses.update({c: json_body(ref("Error"), RESPONSES[c]) for c in sorted(set(codes))})
    out: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        out["parameters"] = list(params)
    if body is not None:
        out["requestBody"] = body
    if not auth:
        out["security"] = []
    return out


def path_param(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    """A required path parameter."""
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


OFFSET = query("offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000, "default": 0}, "Items to skip.")


def limit(default: int) -> dict[str, Any]:
    """The page size parameter."""
    return query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": default}, "Page size.")


JOB = path_param("name", "Job name.")
RUN_ID = path_param("run_id", "Run id.")
XID = path_param("execution_id", "Execution id (also its RQ job id).")
SINCE = {"type": "number", "minimum": 0}
MESSAGE_BODY = {"required": True, "content": {
    "application/json": {"schema": ref("MessageRequest")}, FORM: {"schema": ref("MessageForm")}}}
IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "description": "A repeat within ANGORA_IDEMPOTENCY_TTL (24 h) gets the first answer back "
                                  "(header Idempotent-Replayed: true) and sends nothing; 1-200 printable ASCII "
                                  "characters, optionally quoted.",
                   "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY, "pattern": KEY_PATTERN}}
RUN_BODY = {"required": False, "content": {"application/json": {"schema": ref("RunRequest")}}}
DECIDE_BODY = {"required": False, "content": {"application/json": {"schema": ref("DecideRequest")}}}


def paths(auth: bool) -> dict[str, Any]:
    """Every documented route."""
    a = auth
    return {
        "/send": {"post": op("Send a message (the original form: msg=topic).", ("202", "Accepted", "Accepted."),
                             "400 403 409", (IDEMPOTENCY_KEY,), body=MESSAGE_BODY, auth=a)},
        "/healthz": {"get": {"summary": "Redis reachable; to an authenticated caller (or with auth off), matchers and "
                                        "workers with their last heartbeat.",
                             "security": [], "responses": {
                                 "200": json_body(ref("Health"), "Redis answers."),
                                 "503": json_body(ref("Health"), "Redis does not answer.")}}},
        "/api/v1/jobs": {"get": op("Every job with its latest status, last run and success rate.",
                                   ("200", "JobList", "The jobs."), auth=a)},
        "/api/v1/jobs/{name}": {"get": op(
            "One job: definition, parents, children, statistics, recent executions.",
            ("200", "JobDetail", "The job."), "400 404", (JOB, OFFSET, limit(20)), auth=a)},
        "/api/v1/jobs/{name}/run": {"post": op(
            "Run a job by hand.", ("202", "Started", "Queued."), "400 403 404 409", (JOB,), RUN_BODY, auth=a)},
        "/api/v1/runs": {"get": op("Runs, newest first. With a status or job filter and 2,000 or more runs in "
                                   "flight, the list may be up to a second old.",
                                   ("200", "RunList", "A page of runs."), "400", (
            query("status", {"type": "string", "maxLength": 64}, "Only runs with this overall status."),
            query("job", {"type": "string", "maxLength": 200},
                  "Only runs where this job ran (or was blocked by a failure)."),
            query("since", SINCE, "Only runs started at or after this unix time."),
            query("until", SINCE, "Only runs started at or before this unix time."),
            OFFSET, limit(50)), auth=a)},
        "/api/v1/runs/{run_id}": {"get": op("One run: status, plan, every job's status, executions.",
                                            ("200", "RunDetail", "The run."), "404", (RUN_ID,), auth=a)},
        "/api/v1/runs/{run_id}/cancel": {"post": op(
            "Start no further job of the run: its waiting executions (queued, delayed replays, held) are dropped "
            "now (`dropped`); running commands finish, or with kill=true are killed (`kill_requested`).",
            ("200", "Canceled", "Canceled."), "400 403 404 409", (RUN_ID, query(
                "kill", BOOL, "Also kill the run's running commands.")), auth=a)},
        "/api/v1/runs/{run_id}/rerun": {"post": op(
            "Re-run a run: a new run of its root message and params; with failed=true, its failed, killed and "
            "canceled jobs again in the same run.", ("202", "Rerun", "Started."), "400 403 404 409", (
                RUN_ID, query("failed", BOOL, "Re-run only the failed jobs, in the same run (once it has finished).")),
            auth=a)},
        "/api/v1/executions/{execution_id}": {"get": op(
            "One execution with its output tail.", ("200", "ExecutionDetail", "The execution."), "400 404", (
                XID, query("tail", {"type": "integer", "minimum": 0, "maximum": 65536, "default": 65536},
                           "Characters of output to return, from the end.")), auth=a)},
        "/api/v1/executions/{execution_id}/kill": {"post": op(
            "Kill a running execution or drop a waiting one.", ("200", "Killed", "Done or requested."),
            "403 404 409", (XID,), auth=a)},
        "/api/v1/executions/{execution_id}/retry": {"post": op(
            "Run a finished execution again.", ("202", "Retried", "Queued."), "403 404 409", (XID,), auth=a)},
        "/api/v1/executions/{execution_id}/approve": {"post": op(
            "Approve an execution awaiting approval: it is queued (held if its job is paused).",
            ("200", "Decided", "Approved."), "400 403 404 409", (XID,), DECIDE_BODY, auth=a)},
        "/api/v1/executions/{execution_id}/reject": {"post": op(
            "Reject an execution awaiting approval: it ends rejected, a failure of its run.",
            ("200", "Decided", "Rejected."), "400 403 404 409", (XID,), DECIDE_BODY, auth=a)},
        "/api/v1/executions/{execution_id}/skip": {"post": op(
            "Mark a failed execution succeeded so its children run.", ("200", "Skipped", "Skipped."),
            "403 404 409", (XID,), auth=a)},
        "/api/v1/messages": {"post": op("Send a message (same as /send).", ("202", "Accepted", "Accepted."),
                                        "400 403 409", (IDEMPOTENCY_KEY,), body=MESSAGE_BODY, auth=a)},
        "/api/v1/graph": {"get": op("The workflow graph: nodes and edges, patterns resolved.",
                                    ("200", "Graph", "The graph."), auth=a)},
        "/api/v1/config": {"get": op("Definitions loaded, and the errors of the files as they are now.",
                                     ("200", "ConfigStatus", "The status."), auth=a)},
        **ops_paths(a),
        "/api/v1/openapi.json": {"get": {"summary": "This document.", "responses": {
            "200": json_body({"type": "object"}, "The OpenAPI document."),
            **({c: json_body(ref("Error"), RESPONSES[c]) for c in ("401", "429")} if a else {})}}},
    }


def document(auth: bool = False) -> dict[str, Any]:
    """The OpenAPI document; with `auth`, every operation but /healthz requires a bearer token or a session."""
    from angora_rq import __version__

    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Angora", "version": __version__,
                 "description": "Jobs declared in YAML, triggered by messages; runs, executions and actions."},
        "paths": paths(auth),
        "components": {"schemas": SCHEMAS},
    }
    if auth:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "ANGORA_AUTH_TOKEN"},
            "basic": {"type": "http", "scheme": "basic", "description": "ANGORA_AUTH_USER / ANGORA_AUTH_PASSWORD"},
            "session": {"type": "apiKey", "in": "cookie", "name": "angora_session",
                        "description": "Browser session from /login; state-changing calls need X-CSRF-Token."},
        }
        doc["security"] = [{"bearer": []}, {"basic": []}, {"session": []}]
    return doc
