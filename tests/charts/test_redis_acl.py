"""The bundled Redis' ACL users (templates/redis.yaml, secrets.yaml): the chart's
copy of the table is tessera.common.acl's, the start-up script the chart renders
gives a real redis-server the same users, and every component connects as its
own user with its own password."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tessera.common import acl
from tessera.common.process import free_port

from .conftest import CHART_DIR, NAMESPACE, Obj, Render
from .test_chart import env_of, find

ADDRESS = f"tessera-redis.{NAMESPACE}.svc:6379/0"


def test_the_charts_table_is_tessera_common_acl() -> None:
    text = (CHART_DIR / "files" / "redis-users.json").read_text()
    assert text == acl.chart_users(), "regenerate it: make redis-acl"


def secret_values(objs: list[Obj]) -> dict[str, str]:
    secret = find(objs, "Secret", "tessera-redis")
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


@contextmanager
def server(command: list[str], env: dict[str, str], port: int) -> Iterator[redis.Redis]:
    """A redis-server run by ``command``, and a client of its administrator."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = redis.Redis(port=port, password=env["REDIS_PASSWORD"], socket_timeout=2)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(proc.stderr.read() if proc.stderr else "") from None
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_the_rendered_redis_loads_the_tables_users(render: Render, tmp_path: Path) -> None:
    """The StatefulSet's start-up script, run by sh with the Secret's passwords,
    writes the ACL file acl_file() writes and starts a real redis-server on it."""
    objs = render({})
    passwords = secret_values(objs)
    (container,) = find(objs, "StatefulSet", "tessera-redis")["spec"]["template"]["spec"][
        "containers"
    ]
    sh, flag, script, name = container["command"]
    assert (sh, flag, name) == ("sh", "-c", "redis-server")
    env = {"PATH": os.environ["PATH"]}
    for item in container["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef", {})
        if ref.get("name") == "tessera-redis":
            env[item["name"]] = passwords[ref["key"]]
    script = script.replace("/acl/", f"{tmp_path}/")
    port = free_port()
    local = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
    with server([sh, flag, script, name, *local], env, port) as admin:
        expected = acl.acl_file(
            {n: passwords[f"{n}-password"] for n in acl.NAMES}, admin_password=passwords["password"]
        )
        written = (tmp_path / "users.acl").read_text()
        assert sorted(written.splitlines()) == sorted(expected.splitlines())
        assert len(admin.acl_list()) == 1 + len(acl.NAMES)
        with redis.Redis(port=port, username="zone", password=passwords["zone-password"]) as zone:
            assert zone.hset("tessera:{w}:routes", "p1", "z1|1") == 1
            with pytest.raises(redis.exceptions.NoPermissionError):
                zone.get("tessera:{auth}:session:s1")
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, username="zone", password=passwords["auth-password"]).ping()


@pytest.mark.parametrize("name", ["auth", "relay", "matchmaking", "console", "operator"])
def test_each_component_connects_as_its_own_user(render: Render, name: str) -> None:
    deployment = find(render({"console": {"enabled": True}}), "Deployment", f"tessera-{name}")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "tessera-redis",
        "key": f"{name}-password",
    }
    assert env["TESSERA_REDIS_URL"]["value"] == f"redis://{name}:$(REDIS_PASSWORD)@{ADDRESS}"


def test_zone_pods_get_the_zone_user(render: Render) -> None:
    (container,) = find(render({}), "Deployment", "tessera-operator")["spec"]["template"]["spec"][
        "containers"
    ]
    env = env_of(container)
    assert env["TESSERA_ZONE_REDIS_URL"]["value"] == f"redis://zone:$$(REDIS_PASSWORD)@{ADDRESS}"
    assert env["TESSERA_ZONE_REDIS_SECRET_KEY"]["value"] == "zone-password"


def test_the_generated_secret_has_a_password_per_user(render: Render) -> None:
    passwords = secret_values(render({}))
    assert set(passwords) == {"password", *(f"{n}-password" for n in acl.NAMES)}
    assert len(set(passwords.values())) == len(passwords)
