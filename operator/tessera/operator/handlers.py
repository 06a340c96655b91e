"""The kopf handlers of the Kubernetes runtime (the imperative shell).

- World: a timer runs :func:`tessera.operator.zoneservers.reconcile_world` every
  ``interval_s`` on the elected operator replica (kopf peering).
- ZoneServer created or resumed: its Deployment and Service (owned by it).
- ZoneServer deleted: a finalizer holds the deletion until the World has handed
  the zone's area to another zone and the zone reports Drained (or never
  heartbeated), or the World's drain timeout has passed.

:func:`build_registry` registers them in a fresh registry, so tests and the
entry point can run several operators with different logins.
"""

from __future__ import annotations

import datetime
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import kopf

from tessera.authclient.credentials import ServiceCredentials
from tessera.common.config import Env, ServiceClient
from tessera.common.store import Client
from tessera.operator import metrics, resources
from tessera.operator.kube import GROUP, VERSION, Kube
from tessera.operator.planner.model import Desired, Phase
from tessera.operator.resources import SpecError, WorkloadSettings
from tessera.operator.store import OperatorStore
from tessera.operator.zonectl import ZoneControl
from tessera.operator.zoneservers import reconcile_world
from tessera.v1 import zone_pb2

log = logging.getLogger(__name__)

Login = Callable[..., kopf.ConnectionInfo | None]
FINALIZER = "tessera.io/drain"
# Used when the World is gone and its drain timeout cannot be read.
DEFAULT_DRAIN_TIMEOUT_S = 60.0
_DONE = (zone_pb2.ZONE_STATE_DRAINING, zone_pb2.ZONE_STATE_DRAINED)


@dataclass(frozen=True)
class OperatorConfig:
    """Settings of the operator process (``TESSERA_*`` environment variables)."""

    redis_url: str
    zone_redis_url: str
    interval_s: float = 2.0
    instance: str = "tessera-operator"
    peering: str = "tessera"
    # The replica with the highest priority leads; equal priorities would pause
    # both, so each replica draws a random one unless TESSERA_PEERING_PRIORITY is set.
    priority: int = 0
    standalone: bool = False
    zone_service_account: str | None = None
    # A Secret (in the World's namespace) with the Redis password for zone pods.
    zone_redis_secret: str | None = None
    zone_redis_secret_key: str = "password"
    # A Secret (in the World's namespace) with the PostgreSQL DSN for zone pods.
    zone_database_secret: str | None = None
    zone_database_secret_key: str = "url"
    # Where instance zones report their match result (docs/GAME.md, "Rules"), and a
    # Secret (in the World's namespace) with the secret of auth's ``zone`` client.
    zone_matchmaking_address: str = ""
    zone_service_secret: str | None = None
    zone_service_secret_key: str = "zone-client-secret"
    metrics_port: int = 9090
    health_port: int = 8080
    log_level: str = "info"
    # auth's address: the operator logs in there (service_client) for its zone
    # calls, and zone pods fetch auth's keys from it (TESSERA_AUTH_ADDRESS).
    auth_address: str = "127.0.0.1:50051"
    service_client: ServiceClient | None = None
    # TLS to auth for zone pods: a Secret (World's namespace) with ca.crt, the name.
    zone_tls_ca_secret: str | None = None
    zone_tls_server_name: str = ""

    @classmethod
    def from_env(cls, env: Env | None = None) -> OperatorConfig:
        env = env or Env()
        redis_url = env.redis_url("REDIS_URL", "redis://127.0.0.1:6379/0")
        account = env.string("ZONE_SERVICE_ACCOUNT", "")
        secret = env.string("ZONE_REDIS_SECRET", "")
        return cls(
            redis_url=redis_url,
            zone_redis_url=env.redis_url("ZONE_REDIS_URL", redis_url),
            interval_s=env.number("OPERATOR_INTERVAL_S", 2.0, lo=0.1, hi=300.0),
            instance=env.string("POD_NAME", "tessera-operator"),
            peering=env.string("PEERING", "tessera", pattern=r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"),
            priority=env.integer("PEERING_PRIORITY", 0, lo=0, hi=2**31 - 1)
            or secrets.randbelow(2**31 - 2) + 1,
            standalone=env.flag("STANDALONE", False),
            zone_service_account=account or None,
            zone_redis_secret=secret or None,
            zone_redis_secret_key=env.string("ZONE_REDIS_SECRET_KEY", "password"),
            zone_database_secret=env.string("ZONE_DATABASE_SECRET", "") or None,
            zone_database_secret_key=env.string("ZONE_DATABASE_SECRET_KEY", "url"),
            zone_matchmaking_address=env.string(
                "ZONE_MATCHMAKING_ADDRESS", "", pattern=r"\S+:\d{1,5}"
            ),
            zone_service_secret=env.string("ZONE_SERVICE_SECRET", "") or None,
            zone_service_secret_key=env.string("ZONE_SERVICE_SECRET_KEY", "zone-client-secret"),
            metrics_port=env.integer("METRICS_PORT", 9090, lo=0, hi=65535),
            health_port=env.integer("HEALTH_PORT", 8080, lo=1, hi=65535),
            log_level=env.choice(
                "LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
            ),
            auth_address=env.string("AUTH_ADDRESS", "127.0.0.1:50051", pattern=r"\S+:\d{1,5}"),
            service_client=ServiceClient.from_env(env, "operator"),
            zone_tls_ca_secret=env.string("ZONE_TLS_CA_SECRET", "") or None,
            zone_tls_server_name=env.string("ZONE_TLS_SERVER_NAME", ""),
        )


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf settings: our finalizer and annotations, peering, no CRD scanning
    (so the operator needs no RBAC on CRDs), only warnings posted as events."""
    settings.scanning.disabled = True
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tessera.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="tessera.io", key="last-handled-configuration"
    )
    settings.peering.name = config.peering
    settings.peering.priority = config.priority
    settings.peering.clusterwide = True
    settings.peering.mandatory = not config.standalone
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30


class Runtime:
    """The adapters shared by all handlers; the Kubernetes client follows the
    credentials of the latest login."""

    def __init__(self, config: OperatorConfig, redis: Client) -> None:
        if config.service_client is None:
            raise ValueError("the operator needs its service credentials (service_client)")
        self.config = config
        self.store = OperatorStore(redis)
        self.credentials: ServiceCredentials | None = None
        self.zones = ZoneControl(self._zone_channel)
        self.workload = WorkloadSettings(
            config.zone_redis_url,
            config.zone_service_account,
            config.zone_redis_secret,
            config.zone_redis_secret_key,
            config.zone_database_secret,
            config.zone_database_secret_key,
            auth_address=config.auth_address,
            tls_ca_secret=config.zone_tls_ca_secret,
            tls_server_name=config.zone_tls_server_name,
            matchmaking_address=config.zone_matchmaking_address,
            service_secret=config.zone_service_secret,
            service_secret_key=config.zone_service_secret_key,
        )
        self._kube: Kube | None = None
        self._kube_info: kopf.ConnectionInfo | None = None
        self._info: kopf.ConnectionInfo | None = None

    def _zone_channel(self, address: str) -> grpc.aio.Channel:
        """A channel to a zone whose calls carry the operator's service token (the
        session is opened on first use, inside the operator's event loop)."""
        if self.credentials is None:
            client = self.config.service_client
            assert client is not None
            self.credentials = ServiceCredentials(
                self.config.auth_address, client.client_id, client.secret
            )
        return self.credentials.channel_to(address)

    def connect(self, info: kopf.ConnectionInfo) -> None:
        self._info = info

    async def kube(self) -> Kube:
        if self._info is None:
            raise kopf.TemporaryError("not logged in to Kubernetes yet", delay=1)
        if self._kube is None or self._kube_info is not self._info:
            if self._kube is not None:
                await self._kube.close()
            self._kube, self._kube_info = Kube(self._info), self._info
        return self._kube

    async def close(self) -> None:
        if self._kube is not None:
            await self._kube.close()
        await self.zones.close()
        if self.credentials is not None:
            await self.credentials.close()


def _seconds_since(timestamp: str | None, now: datetime.datetime) -> float:
    if not timestamp:
        return 0.0
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (now - then).total_seconds()


def build_registry(runtime: Runtime, login: Login) -> kopf.OperatorRegistry:
    """A kopf registry with the operator's handlers."""
    registry = kopf.OperatorRegistry()
    config = runtime.config

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info = login(**kwargs)
        if info is not None:
            runtime.connect(info)
        return info

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        await runtime.close()

    @kopf.timer(GROUP, VERSION, "worlds", interval=config.interval_s, registry=registry)
    async def _world(body: kopf.Body, **_: Any) -> None:
        try:
            await reconcile_world(
                _plain(body),
                kube=await runtime.kube(),
                store=runtime.store,
                zones=runtime.zones,
                instance=config.instance,
                now=time.time(),
            )
        except SpecError as err:
            metrics.RECONCILE_ERRORS.labels("spec").inc()
            raise kopf.PermanentError(f"invalid World: {err}") from err
        except Exception:
            metrics.RECONCILE_ERRORS.labels("world").inc()
            raise

    @kopf.on.resume(GROUP, VERSION, "zoneservers", registry=registry)
    @kopf.on.create(GROUP, VERSION, "zoneservers", registry=registry)
    @kopf.on.field(GROUP, VERSION, "zoneservers", field="spec.image", registry=registry)
    async def _workload(body: kopf.Body, **_: Any) -> None:
        zs = _plain(body)
        if zs["metadata"].get("deletionTimestamp"):
            return
        kube = await runtime.kube()
        namespace = zs["metadata"]["namespace"]
        world = await kube.get_world(namespace, zs["spec"]["world"])
        if world is None:
            raise kopf.TemporaryError(f"World {zs['spec']['world']} not found", delay=5)
        try:
            await kube.apply_deployment(
                namespace, resources.deployment(zs, world, runtime.workload)
            )
            await kube.apply_service(namespace, resources.service(zs))
            if resources.guarded(zs):
                await kube.apply_disruption_budget(namespace, resources.disruption_budget(zs))
        except Exception:
            metrics.RECONCILE_ERRORS.labels("workload").inc()
            raise

    @kopf.on.delete(GROUP, VERSION, "zoneservers", registry=registry)
    async def _drain(body: kopf.Body, **_: Any) -> None:
        zs = _plain(body)
        await hold_until_drained(runtime, zs, datetime.datetime.now(tz=datetime.UTC))

    return registry


async def hold_until_drained(
    runtime: Runtime, zs: Mapping[str, Any], now: datetime.datetime
) -> None:
    """Return when the zone may go; raise kopf.TemporaryError to wait."""
    meta, spec = zs["metadata"], zs.get("spec") or {}
    name, namespace, world = meta["name"], meta["namespace"], spec.get("world", "")
    desired = spec.get("desiredState", Desired.ACTIVE.value)
    if desired == Desired.STANDBY.value:
        return
    kube = await runtime.kube()
    world_obj = await kube.get_world(namespace, world)
    status = (await runtime.store.zone_statuses(world, [name])).get(name)
    if world_obj is None:
        timeout = DEFAULT_DRAIN_TIMEOUT_S
        since = meta.get("deletionTimestamp")
        if status is not None and status.state not in _DONE and status.address:
            await runtime.zones.drain(status.address, world=world, target=None, deadline_s=timeout)
    else:
        timeout = float((world_obj.get("spec") or {}).get("drainTimeoutSeconds", 60))
        since = (zs.get("status") or {}).get("drainStartedAt") or meta.get("deletionTimestamp")
        if desired != Desired.DRAINING.value:
            # The World normally reassigns the area within a pass; if it cannot
            # (e.g. its layout is broken), the deletion still ends eventually.
            if _seconds_since(meta.get("deletionTimestamp"), now) >= 2 * timeout:
                log.warning("area never reassigned; releasing the zone", extra={"zone": name})
                return
            raise kopf.TemporaryError(
                f"waiting for World {world} to hand {name}'s area to another zone", delay=1
            )
    # Drained, or never seen heartbeating: nothing to hand away. A heartbeat that
    # lapsed (Failed: e.g. an overloaded zone missing beats) waits for the
    # timeout, as the planner's drain does: the zone may still hold players.
    if resources.phase_of(status, (zs.get("status") or {}).get("phase")) in (
        Phase.DRAINED,
        Phase.PENDING,
    ):
        return
    waited = _seconds_since(since, now)
    if waited >= timeout:
        log.warning("drain timeout; releasing the zone", extra={"zone": name, "waited_s": waited})
        return
    left = "no heartbeat" if status is None else f"{status.drain_remaining} entities left"
    raise kopf.TemporaryError(f"{name} is draining: {left}", delay=1)


def _plain(body: kopf.Body) -> dict[str, Any]:
    """The raw object behind a kopf Body, as plain dicts."""
    return {key: body[key] for key in body}
