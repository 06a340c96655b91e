"""The local Redis harness: a server with the component users, a real cluster
with replicas, stopped cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tessera.harness.redis import LocalRedis, LocalRedisCluster, server_load

pytestmark = pytest.mark.integration


def test_a_local_server_has_every_component_user_and_reports_refusals(tmp_path: Path) -> None:
    with LocalRedis(tmp_path) as server:
        assert server.refusals() == []
        assert server.url_for("relay") == f"redis://relay:local-relay@127.0.0.1:{server.port}/0"
        with redis.Redis.from_url(server.url_for("relay")) as relay:
            assert relay.hget("tessera:{w}:routes", "p1") is None
            with pytest.raises(redis.exceptions.NoPermissionError):
                relay.hset("tessera:{w}:routes", "p1", "z1|1")
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=server.port, username="relay", password="local-zone").ping()
        assert [(e["username"], e["reason"]) for e in server.refusals()] == [
            ("relay", "auth"),
            ("relay", "key"),
        ]
    assert server.refusals() == []


def test_cluster_has_three_masters_each_with_a_replica(redis_cluster: LocalRedisCluster) -> None:
    client = redis.Redis(port=redis_cluster.nodes[0].port)
    try:
        assert client.cluster("INFO")["cluster_state"] == "ok"
        nodes = client.cluster("NODES")
    finally:
        client.close()
    masters = {n["node_id"] for n in nodes.values() if "master" in n["flags"]}
    replicas = [n for n in nodes.values() if "slave" in n["flags"]]
    assert len(masters) == 3 and len(replicas) == 3
    assert sorted(r["master_id"] for r in replicas) == sorted(masters)
    assert redis_cluster.url.startswith("redis+cluster://127.0.0.1:")
    assert redis_cluster.url.count(",") == 5


def test_replicas_have_synced_and_master_of_names_the_serving_node(
    redis_cluster: LocalRedisCluster,
) -> None:
    for node in redis_cluster.nodes:
        with redis.Redis(port=node.port) as client:
            info = client.info("replication")
            assert info["role"] == "master" or info["master_link_status"] == "up"
    for key in ("tessera:{w}:routes", "tessera:{auth}:x", "tessera:{mm}:y"):
        master = redis_cluster.master_of(key)
        for node in redis_cluster.nodes:
            with redis.Redis(port=node.port) as client:
                if node is master:
                    assert client.set(key, "1")
                else:  # another master redirects, a replica too (no READONLY)
                    with pytest.raises(redis.exceptions.MovedError):
                        client.set(key, "1")


def test_stop_ends_every_node(tmp_path: Path) -> None:
    cluster = LocalRedisCluster(tmp_path, masters=3, replicas=0)
    with cluster:
        procs = [node.proc for node in cluster.nodes]
        assert all(p is not None and p.poll() is None for p in procs)
    assert all(node.proc is None for node in cluster.nodes)
    assert all(p is not None and p.poll() is not None for p in procs)


def test_fewer_than_three_masters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 3 masters"):
        LocalRedisCluster(tmp_path, masters=2)


def test_server_load_counts_the_commands_between_two_readings(redis_server: LocalRedis) -> None:
    with redis.Redis(port=redis_server.port) as client:
        before = server_load(client)
        for _ in range(3):
            client.set("tessera:{load}:x", "v" * 1000)
        client.publish("tessera:{load}:ch", "m")
        load = server_load(client).since(before)
    assert load.calls == {"set": 3, "publish": 1}  # the readings' INFO is not counted
    assert load.commands == 4
    assert set(load.usec) == {"set", "publish"} and all(v >= 0 for v in load.usec.values())
    assert load.net_in > 3000  # three 1000-byte values went in
    assert load.cpu_s >= 0.0
