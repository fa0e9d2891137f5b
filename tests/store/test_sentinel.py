"""REDIS_URL=redis+sentinel://...: the URL, the clients it builds, the Link across a failover, ANGORA_DURABILITY."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
import redis

from angora_rq.core.errors import AngoraError
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.settings import SentinelUrl, Settings, parse_sentinel_url
from angora_rq.store.bus import send
from angora_rq.store.connection import client_for, connect
from angora_rq.store.link import Link
from angora_rq.store.replication import NotReplicated, wait_command
from sentinel_cluster import SERVICE, SentinelCluster


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_db() -> None:
    assert parse_sentinel_url("redis+sentinel://a:26380,b,10.0.0.3:1/mymaster/3") == SentinelUrl(
        (("a", 26380), ("b", 26379), ("10.0.0.3", 1)), "mymaster", 3)
    got = parse_sentinel_url("redis+sentinel://user:p%40ss@a/svc?sentinel_password=s3")
    assert (got.db, got.username, got.password, got.sentinel_password) == (0, "user", "p@ss", "s3")
    assert parse_sentinel_url("redis+sentinel://:pw@a:1/svc").password == "pw"


@pytest.mark.parametrize("url", ["redis+sentinel://a:1", "redis+sentinel://a:1/svc/x", "redis+sentinel://a:x/svc",
                                 "redis+sentinel://a:1/svc/0/more", "redis+sentinel://,/svc"])
def test_a_malformed_sentinel_url_is_refused_in_one_line(url: str) -> None:
    with pytest.raises(AngoraError, match="bad setting in the environment: REDIS_URL"):
        Settings.from_env({"REDIS_URL": url})


def test_durability_is_primary_or_replicated() -> None:
    assert Settings.from_env({}).durability == "primary" and wait_command(Settings.from_env({})) is None
    s = Settings.from_env({"ANGORA_DURABILITY": "Replicated", "ANGORA_DURABILITY_TIMEOUT": "250ms"})
    assert s.replicated and wait_command(s) == ("WAIT", 1, 250)
    with pytest.raises(AngoraError, match="ANGORA_DURABILITY='always': use one of primary, replicated"):
        Settings.from_env({"ANGORA_DURABILITY": "always"})


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    """A primary, a replica and three sentinels of this test's own."""
    with SentinelCluster(tmp_path / "cluster") as c:
        yield c


def test_every_client_reaches_the_primary_and_a_link_follows_it_after_a_failover(cluster: SentinelCluster) -> None:
    r = connect(Settings.from_env({"REDIS_URL": cluster.url}))
    link = Link(r)
    assert link.call("SET", "k", "before") == b"OK"
    assert r.info("replication")["role"] == "master" and r.connection_pool.service_name == SERVICE
    old = cluster.kill_primary()
    killed = time.monotonic()
    while True:  # what a role's loop does: retry until Redis answers again
        try:
            link.call("SET", "k", "after")
            break
        except redis.exceptions.ConnectionError:
            assert time.monotonic() - killed < 30, "the Link never reached the new primary"
            time.sleep(0.05)
    new = cluster.wait_failover(old)
    direct = redis.Redis(port=new)
    assert direct.get("k") == b"after" and direct.info("replication")["role"] == "master"
    assert r.get("k") == b"after"  # the client's own pool as well
    direct.close()


def test_a_replicated_send_is_accepted_once_a_replica_has_it(cluster: SentinelCluster) -> None:
    settings = Settings.from_env({"REDIS_URL": cluster.url, "ANGORA_DURABILITY": "replicated",
                                  "ANGORA_DURABILITY_TIMEOUT": "500ms"})
    r, keys = connect(settings), Keys("t")
    entry = send(r, keys, Message.create("a.b", {}, None, origin="test"), wait=wait_command(settings))
    replica = next(n for n in cluster.nodes if n.port != cluster.primary_port())
    assert redis.Redis(port=replica.port).xrange(keys.stream())[0][0].decode() == entry
    r.script_flush()  # as a new primary after a failover: SEND is loaded again, and still waited for
    send(r, keys, Message.create("a.b", {}, None, origin="test"), wait=wait_command(settings))
    replica.kill()
    with pytest.raises(NotReplicated) as refused:
        send(r, keys, Message.create("a.b", {}, None, origin="test"), wait=wait_command(settings))
    assert refused.value.status == 503 and "no replica confirmed the message" in refused.value.message
    assert client_for(cluster.url).xlen(keys.stream()) == 3  # on the primary alone: hence the 503



def test_the_setup_warnings_name_a_sync_delay_and_a_missing_replica(cluster: SentinelCluster) -> None:
    """What every role logs as it starts (and `angora doctor` shows) on a Sentinel deployment's primary."""
    from angora_rq.store.redis_setup import setup_warnings

    settings = Settings.from_env({"REDIS_URL": cluster.url, "ANGORA_DURABILITY": "replicated"})
    r = connect(settings)
    said = " ".join(setup_warnings(r, settings))
    assert "repl-diskless-sync-delay" not in said and "no replica connected" not in said, said
    primary = redis.Redis(port=cluster.primary_port())
    primary.config_set("repl-diskless-sync", "yes")  # Redis 7's defaults
    primary.config_set("repl-diskless-sync-delay", 5)
    assert "only after repl-diskless-sync-delay (5 s)" in " ".join(setup_warnings(r, settings))
    next(n for n in cluster.nodes if n.port != cluster.primary_port()).kill()
    deadline = time.monotonic() + 30
    while primary.info("replication")["connected_slaves"] and time.monotonic() < deadline:
        time.sleep(0.05)
    said = " ".join(setup_warnings(r, settings))
    assert "ANGORA_DURABILITY=replicated, but Redis has no replica connected" in said, said
    plain = Settings.from_env({"REDIS_URL": f"redis://127.0.0.1:{cluster.primary_port()}/0"})
    assert not any("replica" in w for w in setup_warnings(r, plain))  # primary durability, no Sentinel: neither
