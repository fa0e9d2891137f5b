"""Redis trouble -> Unavailable: one mapping (store.connection.unavailable), used by the CLI, the bus and the web."""
from __future__ import annotations

import pytest
import redis

from angora_rq.core.errors import NotFound, Unavailable
from angora_rq.store.connection import redis_errors, unavailable
from angora_rq.web.errors import from_library_error

E = redis.exceptions
MAPPED = [
    (E.ConnectionError("Connection refused"), "Redis is not reachable: Connection refused"),
    (E.BusyLoadingError("Redis is loading the dataset in memory"), "Redis is not reachable"),
    (E.TimeoutError("Timeout reading from socket"), "Redis did not answer in time"),
    # redis-py strips the code of these: the class says it
    (E.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "Redis is out of memory"),
    (E.ReadOnlyError("You can't write against a read only replica."), "Redis refused the command"),
    # ... not of these: the text does, also from inside a Lua script
    (E.ResponseError("MISCONF Redis is configured to save RDB snapshots"), "Redis refused the command"),
    (E.ResponseError("BUSY Redis is busy running a script."), "Redis refused the command"),
    (E.ResponseError("ERR Error running script: @user_script:3: -OOM command not allowed"), "Redis is out of memory"),
]
NOT_MAPPED = [
    E.ResponseError("BUSYGROUP Consumer Group name already exists"),  # XGROUP CREATE's own answer
    E.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    E.ResponseError("BUDGET work 10 10"),  # SEND over a budget: bus.send maps it (Overloaded), not this
    E.NoScriptError("No matching script."),
    E.WatchError("Watched variable changed."),
]


@pytest.mark.parametrize("error, message", MAPPED)
def test_redis_trouble_is_unavailable_with_a_clear_message(error: Exception, message: str) -> None:
    mapped = unavailable(error)
    assert isinstance(mapped, Unavailable) and mapped.status == 503 and mapped.message.startswith(message)
    with pytest.raises(Unavailable) as raised:
        with redis_errors():
            raise error
    assert raised.value.message == mapped.message and raised.value.__cause__ is error
    web = from_library_error(error)  # the web app answers with the very same error
    assert isinstance(web, Unavailable) and web.message == mapped.message


@pytest.mark.parametrize("error", NOT_MAPPED)
def test_other_redis_errors_pass_unchanged(error: Exception) -> None:
    assert unavailable(error) is None and from_library_error(error) is None
    with pytest.raises(type(error)) as raised:
        with redis_errors():
            raise error
    assert raised.value is error


def test_the_web_maps_rqs_unknown_job_too() -> None:
    from rq.exceptions import NoSuchJobError

    assert isinstance(from_library_error(NoSuchJobError("No such job: x")), NotFound)
    assert from_library_error(ValueError("x")) is None
