"""Redis connection factory, key layout and the real-Redis fixture."""

from __future__ import annotations

import asyncio
import threading

import pytest
from redis import exceptions as redis_errors

from tessera.common import store
from tessera.harness.redis import LocalRedis


def test_world_keys_share_one_hash_tag() -> None:
    keys = store.WorldKeys("alpha")
    all_keys = [
        keys.zones,
        keys.zone_status("z1"),
        keys.zone_inbox("z1"),
        keys.zone_map,
        keys.routes,
        keys.checkpoints,
        keys.entity_ids,
    ]
    assert all(k.startswith("tessera:{alpha}:") for k in all_keys)
    assert keys.zone_status("z1") == "tessera:{alpha}:zone:z1:status"


@pytest.mark.parametrize("name", ["", "UPPER", "-lead", "trail-", "a" * 64, "a_b", "a{b}"])
def test_bad_world_names_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="DNS label"):
        store.WorldKeys(name)


@pytest.mark.integration
async def test_session_redis_is_real(redis) -> None:  # type: ignore[no-untyped-def]
    await redis.set("tessera:{t}:k", b"v")
    assert await redis.get("tessera:{t}:k") == b"v"
    info = await redis.info("server")
    assert "redis_version" in info


@pytest.mark.integration
async def test_client_reconnects_after_kill_and_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = LocalRedis(tmp_path, appendonly=True)
    server.start()
    client = store.connect(server.url)
    try:
        await client.set("tessera:{t}:before", b"1")
        server.kill()
        with pytest.raises(redis_errors.ConnectionError):
            await store.connect(server.url, retries=0).ping()
        # Restart while the client is retrying; the next command must succeed.
        threading.Timer(0.5, server.start).start()
        await client.set("tessera:{t}:after", b"2")
        assert await client.get("tessera:{t}:after") == b"2"
        assert await client.get("tessera:{t}:before") == b"1"  # AOF kept it
    finally:
        await client.aclose()
        await asyncio.sleep(0)
        server.stop()


def test_instance_zone_and_stream_names() -> None:
    assert (
        store.instance_zone("0f3c9a1e5b7d4c2a8e6f1b3d5c7a9e0f") == "inst-0f3c9a1e5b7d4c2a8e6f1b3d"
    )
    assert store.instance_zone("ABC") == "inst-abc"
    assert store.instances_stream("earth") == "tessera:{mm}:instances:earth"
    with pytest.raises(ValueError, match="DNS label"):
        store.instances_stream("Earth")
