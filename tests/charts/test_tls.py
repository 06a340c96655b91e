"""TLS in the chart: with a certificate Secret, auth, matchmaking and the relay
serve TLS, their clients in the release trust its CA (and never get its key),
and an optional gRPC Ingress fronts the public endpoints. (Linted and
schema-validated with the other value sets in test_chart.py; the NetworkPolicy
matrix with TLS on is in test_networkpolicy.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Obj, Render

SERVERS = ("auth", "matchmaking", "relay")
CLIENTS = ("relay", "matchmaking", "console")
TLS = {"secretName": "tessera-tls"}


def pod(objs: list[Obj], component: str) -> tuple[Obj, Obj]:
    (deploy,) = [
        o
        for o in objs
        if o["kind"] == "Deployment" and o["metadata"]["name"] == f"tessera-{component}"
    ]
    spec = deploy["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def env(container: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container["env"]}


def volumes(spec: Obj) -> dict[str, Obj]:
    return {v["name"]: v for v in spec["volumes"]}


def test_off_by_default(render: Render) -> None:
    objs = render({"console": {"enabled": True}})
    for component in {*SERVERS, *CLIENTS}:
        spec, container = pod(objs, component)
        assert not [name for name in env(container) if name.startswith("TESSERA_TLS_")]
        assert not {"tls", "tls-ca"} & set(volumes(spec))
        assert container["readinessProbe"]["grpc"] == {"port": 50051}
    assert not [o for o in objs if o["kind"] == "Ingress"]


def test_public_services_serve_tls_and_clients_trust_the_ca(render: Render) -> None:
    objs = render({"tls": TLS, "console": {"enabled": True}})
    for component in SERVERS:
        spec, container = pod(objs, component)
        variables = env(container)
        assert variables["TESSERA_TLS_CERT_FILE"] == "/var/run/tessera/tls/tls.crt"
        assert variables["TESSERA_TLS_KEY_FILE"] == "/var/run/tessera/tls/tls.key"
        secret = volumes(spec)["tls"]["secret"]
        assert secret["secretName"] == "tessera-tls"
        assert [i["key"] for i in secret["items"]] == ["tls.crt", "tls.key"]
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["tls"]["mountPath"] == "/var/run/tessera/tls"
        assert mounts["tls"]["readOnly"] is True
        # The kubelet's gRPC probe cannot speak TLS.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["tcpSocket"] == {"port": "grpc"}
            assert "grpc" not in container[probe]
    for component in CLIENTS:
        spec, container = pod(objs, component)
        assert env(container)["TESSERA_TLS_CA_FILE"] == "/var/run/tessera/tls-ca/ca.crt"
        assert "TESSERA_TLS_SERVER_NAME" not in env(container)
        ca = volumes(spec)["tls-ca"]["secret"]
        assert ca["secretName"] == "tessera-tls"
        assert ca["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    # The console is a client only: no key, plaintext server, gRPC probes.
    spec, container = pod(objs, "console")
    assert "tls" not in volumes(spec)
    assert "TESSERA_TLS_KEY_FILE" not in env(container)
    assert container["readinessProbe"]["grpc"] == {"port": 50051}


def test_a_separate_ca_and_server_name(render: Render) -> None:
    objs = render({"tls": {**TLS, "caSecret": "tessera-ca", "serverName": "tessera.internal"}})
    for component in ("relay", "matchmaking"):
        spec, container = pod(objs, component)
        assert volumes(spec)["tls-ca"]["secret"]["secretName"] == "tessera-ca"
        assert env(container)["TESSERA_TLS_SERVER_NAME"] == "tessera.internal"
    _spec, auth = pod(objs, "auth")
    assert "TESSERA_TLS_CA_FILE" not in env(auth)


def test_the_operator_and_its_zone_pods_trust_the_ca(render: Render) -> None:
    spec, container = pod(render({}), "operator")
    assert not [n for n in env(container) if "TLS" in n] and "tls-ca" not in volumes(spec)
    spec, container = pod(render({"tls": TLS}), "operator")
    variables = env(container)
    assert variables["TESSERA_TLS_CA_FILE"] == "/var/run/tessera/tls-ca/ca.crt"
    assert variables["TESSERA_ZONE_TLS_CA_SECRET"] == "tessera-tls"
    assert "TESSERA_ZONE_TLS_SERVER_NAME" not in variables
    ca = volumes(spec)["tls-ca"]["secret"]
    assert ca == {"secretName": "tessera-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert "tls" not in volumes(spec)  # never the key
    tls = {**TLS, "caSecret": "tessera-ca", "serverName": "tessera.internal"}
    spec, container = pod(render({"tls": tls}), "operator")
    variables = env(container)
    assert variables["TESSERA_ZONE_TLS_CA_SECRET"] == "tessera-ca"
    assert variables["TESSERA_TLS_SERVER_NAME"] == "tessera.internal"
    assert variables["TESSERA_ZONE_TLS_SERVER_NAME"] == "tessera.internal"
    assert volumes(spec)["tls-ca"]["secret"]["secretName"] == "tessera-ca"


def ingress_of(objs: list[Obj]) -> Obj:
    (ingress,) = [o for o in objs if o["kind"] == "Ingress"]
    return ingress


@pytest.mark.parametrize(("tls", "protocol"), [(TLS, "GRPCS"), ({}, "GRPC")])
def test_grpc_ingress(render: Render, tls: dict[str, str], protocol: str) -> None:
    hosts = {"auth": "auth.example.com", "relay": "play.example.com"}
    ingress_values = {
        "enabled": True,
        "hosts": hosts,
        "tlsSecret": "public-tls",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
    }
    ingress = ingress_of(render({"tls": {**tls, "ingress": ingress_values}}))
    assert ingress["metadata"]["name"] == "tessera-grpc"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == protocol
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert ingress["spec"]["tls"] == [{"hosts": list(hosts.values()), "secretName": "public-tls"}]
    routes = {
        r["host"]: r["http"]["paths"][0]["backend"]["service"] for r in ingress["spec"]["rules"]
    }
    assert routes == {
        "auth.example.com": {"name": "tessera-auth", "port": {"name": "grpc"}},
        "play.example.com": {"name": "tessera-relay", "port": {"name": "grpc"}},
    }


def test_an_ingress_without_hosts_is_refused(render: Render) -> None:
    with pytest.raises(Exception, match=r"at least one of tls\.ingress\.hosts"):
        render({"tls": {"ingress": {"enabled": True}}})
