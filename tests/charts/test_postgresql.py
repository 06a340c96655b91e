"""The bundled PostgreSQL, its generated DSN and the backup CronJob (who may reach
the database: test_networkpolicy.py)."""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

import helm_python
import pytest

from .conftest import CHART_DIR, NAMESPACE, Render
from .test_chart import env_of, find, kinds

EXTERNAL = {
    "postgresql": {"enabled": False},
    "database": {"existingSecret": "pg", "existingSecretKey": "dsn"},
}


def test_bundled_statefulset_is_hardened_and_probed(render: Render) -> None:
    objs = render({"postgresql": {"maxConnections": 300, "persistence": {"size": "50Gi"}}})
    sts = find(objs, "StatefulSet", "tessera-postgresql")
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 999
    assert pod["securityContext"]["fsGroup"] == 999
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == "docker.io/library/postgres:16"
    assert container["args"] == ["-c", "max_connections=300"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:3] == ["pg_isready", "-h", "127.0.0.1"], probe
        assert command[-4:] == ["-U", "tessera", "-d", "tessera"], probe
    env = env_of(container)
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "tessera-postgresql",
        "key": "password",
    }
    assert env["PGDATA"]["value"].startswith("/var/lib/postgresql/data/")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/postgresql/data", "/var/run/postgresql", "/tmp"} <= mounts
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    for name in ("tessera-postgresql", "tessera-postgresql-headless"):
        service = find(objs, "Service", name)
        assert service["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
        assert service["spec"]["ports"][0]["port"] == 5432


def test_generated_dsn_points_at_the_bundled_service(render: Render) -> None:
    values = {"postgresql": {"database": "world", "username": "game"}}
    secret = find(render(values), "Secret", "tessera-postgresql")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert len(data["password"]) == 32 and data["password"].isalnum()
    dsn = urlsplit(data["url"])
    assert (dsn.scheme, dsn.username, dsn.password) == ("postgresql", "game", data["password"])
    assert (dsn.hostname, dsn.port, dsn.path) == (
        f"tessera-postgresql.{NAMESPACE}.svc",
        5432,
        "/world",
    )


def test_external_database_bundles_nothing(render: Render) -> None:
    objs = render(EXTERNAL)
    names = {name for _, name in kinds(objs)}
    assert not {"tessera-postgresql", "tessera-postgresql-headless"} & names
    cron = find(objs, "CronJob", "tessera-database-backup")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    ref = env_of(container)["TESSERA_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("pg", "dsn")


def test_an_external_secret_with_the_bundled_database_is_refused(
    chart: helm_python.Chart,
) -> None:
    with pytest.raises(helm_python.HelmRenderError) as err:
        chart.render({"database": {"existingSecret": "pg"}}, name="tessera", namespace=NAMESPACE)
    assert "set postgresql.enabled=false" in str(err.value)


def test_backup_cronjob_runs_the_shipped_script(render: Render) -> None:
    objs = render({"backup": {"schedule": "15 */4 * * *", "keep": 30}})
    script = (CHART_DIR / "scripts" / "backup.sh").read_text()
    config = find(objs, "ConfigMap", "tessera-database-backup")
    assert config["data"]["backup.sh"] == script
    cron = find(objs, "CronJob", "tessera-database-backup")
    assert cron["spec"]["schedule"] == "15 */4 * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["sh", "/scripts/backup.sh"]
    env = env_of(container)
    assert env["BACKUP_KEEP"]["value"] == "30"
    assert env["BACKUP_DIR"]["value"] == "/backups"
    ref = env["TESSERA_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("tessera-postgresql", "url")
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["backups"]["persistentVolumeClaim"]["claimName"]
    pvc = find(objs, "PersistentVolumeClaim", claim)
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/backups"] == "backups"
    assert "pg_dump --format=custom" in script
    assert not any(o["kind"] == "CronJob" for o in render({"backup": {"enabled": False}}))
