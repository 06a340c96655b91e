"""Kubernetes objects in and out, as plain dicts: World and ZoneServer resources
read into planner types, and the ZoneServers, Deployments, Services, statuses and
Events the operator writes. Pure functions; kube.py sends what they build."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tessera.common.store import instance_zone
from tessera.operator.planner.actions import (
    Action,
    Adopt,
    AssignStandby,
    CreateZone,
    Delete,
    Drain,
    Plan,
    Rebound,
)
from tessera.operator.planner.model import (
    Desired,
    InstancePolicy,
    InstanceRequest,
    Phase,
    Policy,
    Rollout,
    WorldSpec,
    ZoneView,
)
from tessera.v1 import matchmaking_pb2, zone_pb2
from tessera.wire.bounds import to_bounds
from tessera.wire.geometry import Rect
from tessera.wire.names import MODULE_PATH, check_name

API_VERSION = "tessera.io/v1alpha1"
MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR = "tessera-operator"
WORLD_LABEL = "tessera.io/world"
ZONE_LABEL = "tessera.io/zone"
GRPC_PORT = 50051
METRICS_PORT = 9090
# A match id as the ZoneServer CRD accepts it (spec.instance.match).
# Match ids are DNS labels (the matchmaker makes uuid4 hex ids): the zone takes
# its match in TESSERA_ZONE_INSTANCE, which must be one.
MATCH_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# A game module's Python path (spec.game.module, spec.game.modes.<mode>.module).
MODULE_RE = re.compile(MODULE_PATH)
# The longest matchmaking mode name (1-64 printable characters, as matchmaking's).
MODE_MAX = 64
# Extra time the pod gets after the drain deadline for the last handoffs and exit.
TERMINATION_MARGIN_S = 30

_STATE_PHASE = {
    zone_pb2.ZONE_STATE_STARTING: Phase.STARTING,
    zone_pb2.ZONE_STATE_STANDBY: Phase.READY,
    zone_pb2.ZONE_STATE_ACTIVE: Phase.READY,
    zone_pb2.ZONE_STATE_DRAINING: Phase.DRAINING,
    zone_pb2.ZONE_STATE_DRAINED: Phase.DRAINED,
}


class SpecError(ValueError):
    """A World or ZoneServer spec the operator cannot act on."""


def rect_of(raw: Mapping[str, Any]) -> Rect:
    try:
        rect = Rect(float(raw["minX"]), float(raw["minZ"]), float(raw["maxX"]), float(raw["maxZ"]))
    except (KeyError, TypeError, ValueError) as err:
        raise SpecError(f"bounds need numeric minX, minZ, maxX, maxZ: {err}") from None
    if not all(math.isfinite(v) for v in (rect.min_x, rect.min_z, rect.max_x, rect.max_z)):
        raise SpecError("bounds must be finite")
    if not (rect.min_x < rect.max_x and rect.min_z < rect.max_z):
        raise SpecError("bounds must have minX < maxX and minZ < maxZ")
    return rect


def bounds_dict(rect: Rect) -> dict[str, float]:
    return {"minX": rect.min_x, "minZ": rect.min_z, "maxX": rect.max_x, "maxZ": rect.max_z}


def game_modules(wspec: Mapping[str, Any]) -> dict[str, str]:
    """The game module of each instance mode the World names (spec.game.modes)."""
    modes = (wspec.get("game") or {}).get("modes") or {}
    if not isinstance(modes, Mapping):
        raise SpecError("spec.game.modes must map mode names to {module: ...}")
    out = {}
    for mode, entry in modes.items():
        module = entry.get("module") if isinstance(entry, Mapping) else None
        if not (0 < len(str(mode)) <= MODE_MAX and str(mode).isprintable()):
            raise SpecError(f"spec.game.modes: mode {mode!r} must be 1-64 printable characters")
        if not isinstance(module, str) or MODULE_RE.fullmatch(module) is None:
            raise SpecError(f"spec.game.modes.{mode}.module {module!r} is not a module path")
        out[str(mode)] = module
    return out


def zone_template(wspec: Mapping[str, Any], mode: str = "") -> dict[str, Any]:
    """What a zone of a World runs: its zoneTemplate plus its game module as
    ``gameModule`` (so a new game rolls out like a new image): for an instance zone
    of a ``mode`` spec.game.modes names, that mode's module; else spec.game.module.
    The open world's template, and so its revision, never holds a mode's module."""
    template = dict(wspec.get("zoneTemplate") or {})
    module = game_modules(wspec).get(mode) if mode else None
    module = module or (wspec.get("game") or {}).get("module")
    if module:
        template["gameModule"] = str(module)
    return template


def template_revision(template: Mapping[str, Any]) -> str:
    """A short hash of a zone template: zones whose template hashes differ from
    the World's are replaced."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def rollout_of(raw: Mapping[str, Any]) -> Rollout:
    """The World's ``spec.rollout`` with the CRD's defaults and limits."""
    d = Rollout()
    out = Rollout(
        max_surge=int(raw.get("maxSurge", d.max_surge)),
        max_unavailable=int(raw.get("maxUnavailable", d.max_unavailable)),
        paused=bool(raw.get("paused", d.paused)),
    )
    if out.max_surge < 1 or out.max_unavailable < 1:
        raise SpecError("rollout.maxSurge and rollout.maxUnavailable must be at least 1")
    return out


def world_spec(obj: Mapping[str, Any]) -> WorldSpec:
    """The planner's view of a World, with the CRD's defaults and rules (the API
    server enforces them too; they are repeated here for hand-made objects)."""
    name = obj["metadata"]["name"]
    spec = obj.get("spec") or {}
    auto = spec.get("autoscaling") or {}
    d = Policy()
    policy = Policy(
        enabled=bool(auto.get("enabled", d.enabled)),
        mode=str(auto.get("mode", d.mode)),
        target_players=int(auto.get("targetPlayersPerZone", d.target_players)),
        split_threshold=int(auto.get("splitThreshold", d.split_threshold)),
        merge_threshold=int(auto.get("mergeThreshold", d.merge_threshold)),
        split_window_s=float(auto.get("splitStabilizationSeconds", d.split_window_s)),
        merge_window_s=float(auto.get("mergeStabilizationSeconds", d.merge_window_s)),
        cooldown_s=float(auto.get("cooldownSeconds", d.cooldown_s)),
        min_zones=int(auto.get("minZones", d.min_zones)),
        max_zones=int(auto.get("maxZones", d.max_zones)),
        min_zone_size=float(auto.get("minZoneSize", d.min_zone_size)),
        max_depth=int(auto.get("maxDepth", d.max_depth)),
    )
    bounds = rect_of(spec.get("bounds") or {})
    if not policy.merge_threshold < policy.target_players < policy.split_threshold:
        raise SpecError("need mergeThreshold < targetPlayersPerZone < splitThreshold")
    if policy.min_zones > policy.max_zones:
        raise SpecError("minZones must be <= maxZones")
    if min(bounds.width, bounds.height) < policy.min_zone_size:
        raise SpecError("the world must be at least autoscaling.minZoneSize on each axis")
    replicas = spec.get("replicas")
    if policy.mode == "External" and replicas is None:
        raise SpecError("spec.replicas is required when autoscaling.mode is External")
    template = zone_template(spec)
    if not template.get("image"):
        raise SpecError("spec.zoneTemplate.image is required")
    game_modules(spec)  # checked now; read when an instance zone of a mode starts
    raw = spec.get("instances") or {}
    i = InstancePolicy()
    instances = InstancePolicy(
        max_instances=int(raw.get("maxInstances", i.max_instances)),
        start_timeout_s=float(raw.get("startTimeoutSeconds", i.start_timeout_s)),
        idle_s=float(raw.get("idleSeconds", i.idle_s)),
        end_grace_s=float(raw.get("endGraceSeconds", i.end_grace_s)),
        max_lifetime_s=float(raw.get("maxLifetimeSeconds", i.max_lifetime_s)),
    )
    return WorldSpec(
        name=check_name("world", name),
        bounds=bounds,
        policy=policy,
        layout=str(spec.get("layout", "Managed")),
        standby=int(spec.get("standby", 0)),
        drain_timeout_s=float(spec.get("drainTimeoutSeconds", 60)),
        replicas=int(replicas) if replicas is not None else None,
        instances=instances,
        revision=template_revision(template),
        rollout=rollout_of(spec.get("rollout") or {}),
    )


def phase_of(status: zone_pb2.ZoneStatus | None, previous: str | None) -> Phase:
    """A zone's phase from its heartbeat. No heartbeat: Pending before the zone
    was ever seen, Failed after (it stopped heartbeating), Drained stays Drained."""
    if status is None:
        if previous in (None, "", Phase.PENDING.value):
            return Phase.PENDING
        return Phase.DRAINED if previous == Phase.DRAINED.value else Phase.FAILED
    return _STATE_PHASE.get(status.state, Phase.STARTING)


def is_managed(obj: Mapping[str, Any]) -> bool:
    return (obj["metadata"].get("labels") or {}).get(MANAGED_BY) == OPERATOR


def timestamp(text: str | None) -> float | None:
    """Seconds since the epoch of a Kubernetes timestamp (None if absent or bad)."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def zone_view(
    obj: Mapping[str, Any], status: zone_pb2.ZoneStatus | None, *, evicting: bool = False
) -> ZoneView:
    """The planner's view of one ZoneServer and its heartbeat (``evicting``: its
    pod's node is being drained)."""
    spec = obj.get("spec") or {}
    match = (spec.get("instance") or {}).get("match")
    raw_bounds = spec.get("bounds")
    desired = Desired(spec.get("desiredState", Desired.ACTIVE.value))
    return ZoneView(
        name=obj["metadata"]["name"],
        desired=desired,
        bounds=rect_of(raw_bounds) if raw_bounds else None,
        parent=spec.get("parent"),
        depth=int(spec.get("depth", 0)),
        split_depth=int(spec.get("splitDepth", spec.get("depth", 0))),
        phase=phase_of(status, (obj.get("status") or {}).get("phase")),
        players=int(status.players) if status else 0,
        overload_level=int(status.overload_level) if status else 0,
        sample_x=status.sample_x if status else (),
        sample_z=status.sample_z if status else (),
        managed=is_managed(obj),
        deleting=bool(obj["metadata"].get("deletionTimestamp")),
        instance=str(match) if match else None,
        created=timestamp(obj["metadata"].get("creationTimestamp")),
        revision=template_revision(spec["template"]) if spec.get("template") else "",
        evicting=evicting,
    )


def owner_reference(obj: Mapping[str, Any], *, controller: bool = True) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": obj.get("apiVersion", API_VERSION),
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def owned_metadata(zs: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata of an object a ZoneServer owns, named after it."""
    meta = zs["metadata"]
    return {
        "name": meta["name"],
        "namespace": meta["namespace"],
        "labels": labels(zs["spec"]["world"], meta["name"]),
        "ownerReferences": [owner_reference(zs)],
    }


def labels(world: str, zone: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tessera-zone",
        MANAGED_BY: OPERATOR,
        WORLD_LABEL: world,
        ZONE_LABEL: zone,
    }


def zoneserver(world_obj: Mapping[str, Any], action: CreateZone) -> dict[str, Any]:
    """A new ZoneServer owned by the World."""
    world = world_obj["metadata"]["name"]
    spec: dict[str, Any] = {
        "world": world,
        "desiredState": (Desired.ACTIVE if action.bounds else Desired.STANDBY).value,
        "depth": action.depth,
        "splitDepth": action.split_depth,
    }
    if action.bounds is not None:
        spec["bounds"] = bounds_dict(action.bounds)
    if action.parent:
        spec["parent"] = action.parent
    if action.instance:
        spec["instance"] = {
            "match": action.instance,
            **({"mode": action.mode} if action.mode else {}),
        }
    spec["template"] = zone_template(world_obj.get("spec") or {}, action.mode)
    return {
        "apiVersion": API_VERSION,
        "kind": "ZoneServer",
        "metadata": {
            "name": action.zone,
            "namespace": world_obj["metadata"]["namespace"],
            "labels": labels(world, action.zone),
            "ownerReferences": [owner_reference(world_obj)],
        },
        "spec": spec,
    }


def zoneserver_patch(action: AssignStandby | Rebound | Adopt | Drain) -> dict[str, Any]:
    """The spec change that carries out an action on an existing ZoneServer."""
    if isinstance(action, AssignStandby):
        spec: dict[str, Any] = {
            "desiredState": Desired.ACTIVE.value,
            "bounds": bounds_dict(action.bounds),
            "depth": action.depth,
            "splitDepth": action.split_depth,
        }
        if action.parent:
            spec["parent"] = action.parent
        return {"spec": spec}
    if isinstance(action, Rebound):
        return {"spec": {"bounds": bounds_dict(action.bounds), "depth": action.depth}}
    if isinstance(action, Adopt):
        return {"spec": {"parent": action.parent}}
    return {"spec": {"desiredState": Desired.DRAINING.value, "drainTarget": action.target}}


@dataclass(frozen=True)
class WorkloadSettings:
    """What every zone pod gets besides the World's zone template."""

    redis_url: str
    service_account: str | None = None
    # A Secret in the World's namespace holding the Redis password: the pod gets
    # it as REDIS_PASSWORD, and ``redis_url`` may name it as $(REDIS_PASSWORD).
    redis_secret: str | None = None
    redis_secret_key: str = "password"
    # A Secret in the World's namespace holding the PostgreSQL DSN: the pod gets it
    # as TESSERA_DATABASE_URL (zone persistence, docs/ZONE.md); None = persistence off.
    database_secret: str | None = None
    database_secret_key: str = "url"
    # auth's gRPC address: zones fetch its public keys there to verify callers.
    auth_address: str = ""
    # A Secret in the World's namespace whose ``ca.crt`` the pod trusts for TLS to
    # auth (TESSERA_TLS_CA_FILE), and the name auth's certificate must carry
    # ("" = the host dialled); None = plaintext to auth.
    tls_ca_secret: str | None = None
    tls_server_name: str = ""
    # Instance zones only: matchmaking's address, and the Secret holding the secret
    # of auth's ``zone`` service client, to report their match result with.
    matchmaking_address: str = ""
    service_secret: str | None = None
    service_secret_key: str = "zone-client-secret"


def _reporting(settings: WorkloadSettings) -> list[dict[str, Any]]:
    """An instance zone's settings for reporting its match result (docs/GAME.md,
    "Rules"), when the operator was given them."""
    if not (settings.matchmaking_address and settings.service_secret):
        return []
    secret = {"name": settings.service_secret, "key": settings.service_secret_key}
    return [
        {"name": "TESSERA_MATCHMAKING_ADDRESS", "value": settings.matchmaking_address},
        {"name": "TESSERA_SERVICE_CLIENT_ID", "value": "zone"},
        {"name": "TESSERA_SERVICE_CLIENT_SECRET", "valueFrom": {"secretKeyRef": secret}},
    ]


# Where a zone pod mounts the CA it trusts for TLS to auth (as the chart's pods do).
TLS_CA_DIR = "/var/run/tessera/tls-ca"

# The same as the chart's pods (tessera.podSecurityContext, tessera.containerSecurityContext).
RUN_AS = 10001
POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def deployment(
    zs: Mapping[str, Any], world_obj: Mapping[str, Any], settings: WorkloadSettings
) -> dict[str, Any]:
    """The one-pod Deployment running a ZoneServer's zone process, from the
    template the ZoneServer was created with (else the World's)."""
    meta = zs["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = zs.get("spec") or {}
    wspec = world_obj.get("spec") or {}
    template = spec.get("template") or zone_template(
        wspec, str((spec.get("instance") or {}).get("mode", ""))
    )
    world = spec["world"]
    world_rect = rect_of(wspec["bounds"])
    bounds = rect_of(spec["bounds"]).text() if spec.get("bounds") else ""
    drain_timeout = int(wspec.get("drainTimeoutSeconds", 60))
    env = [
        {"name": "TESSERA_WORLD", "value": world},
        {"name": "TESSERA_ZONE", "value": name},
        {"name": "TESSERA_WORLD_BOUNDS", "value": world_rect.text()},
        {"name": "TESSERA_ZONE_BOUNDS", "value": bounds},
        *(
            [
                {
                    "name": "REDIS_PASSWORD",
                    "valueFrom": {
                        "secretKeyRef": {
                            "name": settings.redis_secret,
                            "key": settings.redis_secret_key,
                        }
                    },
                }
            ]
            if settings.redis_secret
            else []
        ),
        {"name": "TESSERA_REDIS_URL", "value": settings.redis_url},
        *(
            [
                {
                    "name": "TESSERA_DATABASE_URL",
                    "valueFrom": {
                        "secretKeyRef": {
                            "name": settings.database_secret,
                            "key": settings.database_secret_key,
                        }
                    },
                }
            ]
            if settings.database_secret
            else []
        ),
        *(
            [{"name": "TESSERA_AUTH_ADDRESS", "value": settings.auth_address}]
            if settings.auth_address
            else []
        ),
        *(
            [{"name": "TESSERA_TLS_CA_FILE", "value": f"{TLS_CA_DIR}/ca.crt"}]
            if settings.tls_ca_secret
            else []
        ),
        *(
            [{"name": "TESSERA_TLS_SERVER_NAME", "value": settings.tls_server_name}]
            if settings.tls_ca_secret and settings.tls_server_name
            else []
        ),
        {"name": "TESSERA_TICK_HZ", "value": str(template.get("tickRate", 30))},
        {"name": "TESSERA_GRPC_PORT", "value": str(GRPC_PORT)},
        {"name": "TESSERA_METRICS_PORT", "value": str(METRICS_PORT)},
        {"name": "TESSERA_DRAIN_TIMEOUT_S", "value": str(drain_timeout)},
        *(
            [{"name": "TESSERA_GAME_MODULE", "value": str(template["gameModule"])}]
            if template.get("gameModule")
            else []
        ),
        *(
            [{"name": "TESSERA_ZONE_INSTANCE", "value": str(spec["instance"]["match"])}]
            if spec.get("instance")
            else []
        ),
        *(_reporting(settings) if spec.get("instance") else []),
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "TESSERA_ADVERTISE_ADDRESS", "value": f"$(POD_IP):{GRPC_PORT}"},
        *({"name": e["name"], "value": e.get("value", "")} for e in template.get("env", [])),
    ]
    probe = {"grpc": {"port": GRPC_PORT}, "periodSeconds": 5, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": "zone",
        "image": spec.get("image") or template["image"],
        "imagePullPolicy": template.get("imagePullPolicy", "IfNotPresent"),
        "command": ["python", "-m", "tessera.zone"],
        "env": env,
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 6},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            *(
                [{"name": "tls-ca", "mountPath": TLS_CA_DIR, "readOnly": True}]
                if settings.tls_ca_secret
                else []
            ),
        ],
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": [
                        "python",
                        "-m",
                        "tessera.operator.prestop",
                        "--timeout",
                        str(drain_timeout),
                    ]
                }
            }
        },
    }
    if template.get("resources"):
        container["resources"] = template["resources"]
    pod_labels = labels(world, name)
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": drain_timeout + TERMINATION_MARGIN_S,
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY,
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            *(
                [
                    {
                        "name": "tls-ca",
                        "secret": {
                            "secretName": settings.tls_ca_secret,
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        },
                    }
                ]
                if settings.tls_ca_secret
                else []
            ),
        ],
        # One node's loss takes a bounded share of the world.
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {WORLD_LABEL: world}},
            }
            for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
        ],
    }
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": pod_labels,
            "ownerReferences": [owner_reference(zs)],
        },
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {WORLD_LABEL: world, ZONE_LABEL: name}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def guarded(zs: Mapping[str, Any]) -> bool:
    """Whether a zone's pod gets a PodDisruptionBudget: zones the operator
    replaces by handoff (managed open-world zones); an instance zone ends by its
    own rules, a hand-applied zone is the user's."""
    return is_managed(zs) and not (zs.get("spec") or {}).get("instance")


def disruption_budget(zs: Mapping[str, Any]) -> dict[str, Any]:
    """A PodDisruptionBudget that refuses every eviction of a zone's Ready pod: a
    node drain waits until the operator has replaced the zone by handoff (see
    :func:`evicting`) and deleted it."""
    meta = zs["metadata"]
    world = zs["spec"]["world"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": owned_metadata(zs),
        "spec": {
            "maxUnavailable": 0,
            "selector": {"matchLabels": {WORLD_LABEL: world, ZONE_LABEL: meta["name"]}},
            # A zone pod that is not Ready (crash-looping, restoring) is never
            # replaced by handoff; its eviction must not hold a node drain forever.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


# Taints that announce a node's drain besides the cordon's own
# (node.kubernetes.io/unschedulable comes with spec.unschedulable).
DRAIN_TAINTS = frozenset(
    {
        "node.kubernetes.io/unschedulable",
        "ToBeDeletedByClusterAutoscaler",
        "karpenter.sh/disrupted",
        "karpenter.sh/disruption",
    }
)


def draining_node(node: Mapping[str, Any]) -> bool:
    """A node being drained: cordoned, or tainted by a node autoscaler about to remove it."""
    spec = node.get("spec") or {}
    taints = {t.get("key") for t in spec.get("taints") or []}
    return bool(spec.get("unschedulable")) or bool(taints & DRAIN_TAINTS)


def evicting(
    pods: Sequence[Mapping[str, Any]], nodes: Sequence[Mapping[str, Any]]
) -> frozenset[str]:
    """The zones whose pod is on a draining node or marked for disruption
    (condition DisruptionTarget, set by the API server before an eviction or
    preemption deletes the pod)."""
    leaving = {n["metadata"]["name"] for n in nodes if draining_node(n)}
    out = set()
    for pod in pods:
        zone = (pod["metadata"].get("labels") or {}).get(ZONE_LABEL)
        if not zone or pod["metadata"].get("deletionTimestamp"):
            continue
        conditions = (pod.get("status") or {}).get("conditions") or []
        marked = any(
            c.get("type") == "DisruptionTarget" and c.get("status") == "True" for c in conditions
        )
        if marked or (pod.get("spec") or {}).get("nodeName") in leaving:
            out.add(zone)
    return frozenset(out)


def service(zs: Mapping[str, Any]) -> dict[str, Any]:
    """The ClusterIP Service in front of a zone pod (gRPC and metrics)."""
    meta = zs["metadata"]
    world = zs["spec"]["world"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owned_metadata(zs),
        "spec": {
            "type": "ClusterIP",
            "selector": {WORLD_LABEL: world, ZONE_LABEL: meta["name"]},
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }


def condition(kind: str, ok: bool, reason: str, message: str, now: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }


def zone_status(
    obj: Mapping[str, Any],
    view: ZoneView,
    status: zone_pb2.ZoneStatus | None,
    world: WorldSpec,
    now: str,
) -> dict[str, Any]:
    """The ZoneServer status for a heartbeat (only fields the zone reported)."""
    previous = obj.get("status") or {}
    out: dict[str, Any] = {"phase": view.phase.value, "players": view.players}
    if view.bounds is not None:
        out["boundsText"] = view.bounds.text()
        km2 = view.bounds.area / 1e6
        out["density"] = round(view.players / km2, 3) if km2 > 0 else 0.0
        inside = view.bounds.inside(world.bounds)
        message = "inside the world" if inside else f"outside the world {world.bounds.text()}"
        ok_before = any(
            c.get("type") == "BoundsValid" and c.get("status") == ("True" if inside else "False")
            for c in previous.get("conditions", [])
        )
        if not ok_before:
            out["conditions"] = [
                condition("BoundsValid", inside, "Bounds", message, now),
            ]
    if status is not None:
        out["endpoint"] = status.address
        out["tickP99Ms"] = round(status.tick_p99_ms, 3)
        out["drainRemaining"] = int(status.drain_remaining)
        out["mapVersion"] = int(status.map_version)
    if view.desired == Desired.DRAINING and not previous.get("drainStartedAt"):
        out["drainStartedAt"] = now
    out["updatedAt"] = now
    return out


# Status fields written as soon as they change; the rest (players, density,
# tick time) at most every STATUS_PERIOD_S, so a large world does not turn every
# heartbeat into an API write per zone.
URGENT_STATUS = frozenset(
    {"phase", "endpoint", "boundsText", "conditions", "drainStartedAt", "drainRemaining"}
)
STATUS_PERIOD_S = 15.0


def status_due(previous: Mapping[str, Any], patch: Mapping[str, Any], now: float) -> bool:
    """Whether a ZoneServer status patch should be written now."""
    moved = {k for k, v in patch.items() if k != "updatedAt" and previous.get(k) != v}
    if moved & URGENT_STATUS:
        return True
    if not moved:
        return False
    try:
        last = datetime.datetime.fromisoformat(str(previous.get("updatedAt"))).timestamp()
    except ValueError:
        return True
    return now - last >= STATUS_PERIOD_S


def recommended_zones(world: WorldSpec, views: Sequence[ZoneView]) -> int:
    """Zones the open world's players would need at ``targetPlayersPerZone`` each
    (instances excluded): a sizing signal for HPA/KEDA users, never acted on here."""
    open_world = sum(z.players for z in views if z.instance is None)
    return max(1, math.ceil(open_world / world.policy.target_players))


def world_status(
    world: WorldSpec,
    views: Sequence[ZoneView],
    result: Plan,
    *,
    map_version: int,
    previous: Mapping[str, Any],
    now: str,
) -> dict[str, Any]:
    """The World status after a planning pass."""
    active = [z for z in views if z.desired == Desired.ACTIVE and z.instance is None]
    phases: dict[str, int] = {}
    for z in views:
        phases[z.phase.value] = phases.get(z.phase.value, 0) + 1
    players = sum(z.players for z in views)
    problems = [n for n in result.notes if "do not partition" in n]
    out: dict[str, Any] = {
        "replicas": len(active),
        "updatedZones": sum(1 for z in active if updated(z, world)),
        "selector": f"{WORLD_LABEL}={world.name}",
        "zonesByPhase": phases,
        "standbyZones": sum(1 for z in views if z.desired == Desired.STANDBY),
        "instances": sum(1 for z in views if z.instance is not None),
        "totalPlayers": players,
        "recommendedZones": recommended_zones(world, views),
        "mapVersion": map_version,
        "planner": result.memory.to_dict(),
        "conditions": [
            condition(
                "Partitioned",
                not problems,
                "Layout",
                problems[0] if problems else "the zones partition the world exactly",
                now,
            )
        ],
    }
    if result.actions:
        last = result.actions[-1]
        out["lastDecision"] = {
            "time": now,
            "action": last.decision,
            "zone": last.zone,
            "reason": last.reason,
        }
    old = [c for c in previous.get("conditions", []) if c.get("type") == "Partitioned"]
    if old and old[0].get("status") == out["conditions"][0]["status"]:
        out["conditions"][0]["lastTransitionTime"] = old[0].get("lastTransitionTime", now)
    return out


def updated(zone: ZoneView, world: WorldSpec) -> bool:
    """Whether a zone runs the World's current zone template."""
    return not world.revision or zone.revision == world.revision


def event(
    world_obj: Mapping[str, Any], action: Action, now: str, *, instance: str
) -> dict[str, Any]:
    """A core/v1 Event on the World for one scaling decision."""
    meta = world_obj["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{meta['name']}.",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": world_obj.get("apiVersion", API_VERSION),
            "kind": "World",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "type": "Warning" if action.decision == "DrainTimeout" else "Normal",
        "reason": action.decision,
        "message": action.reason[:1024],
        "source": {"component": OPERATOR},
        "reportingComponent": OPERATOR,
        "reportingInstance": instance,
        "action": type(action).__name__,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def map_entries(
    world: WorldSpec, views: Sequence[ZoneView], statuses: Mapping[str, zone_pb2.ZoneStatus]
) -> list[zone_pb2.ZoneMapEntry]:
    """The zone map: every zone that owns bounds (managed ones in a Managed world);
    never an instance zone (it is not part of the world's partition)."""
    out = []
    for z in views:
        if z.desired != Desired.ACTIVE or z.bounds is None or z.instance is not None:
            continue
        if world.layout == "Managed" and not z.managed:
            continue
        status = statuses.get(z.name)
        out.append(
            zone_pb2.ZoneMapEntry(
                zone=z.name,
                address=status.address if status else "",
                bounds=to_bounds(z.bounds),
                state=status.state if status else zone_pb2.ZONE_STATE_STARTING,
            )
        )
    return out


_ACTIONS: dict[str, type[Action]] = {
    cls.__name__: cls for cls in (CreateZone, AssignStandby, Rebound, Adopt, Drain, Delete)
}


def action_dict(action: Action) -> dict[str, Any]:
    """An action as JSON (the World's intent log, ``status.pending``)."""
    out: dict[str, Any] = {"type": type(action).__name__}
    for key, value in vars(action).items():
        out[key] = bounds_dict(value) if isinstance(value, Rect) else value
    return out


def action_of(data: Mapping[str, Any]) -> Action:
    """The inverse of :func:`action_dict`; SpecError if it is not one."""
    cls = _ACTIONS.get(str(data.get("type")))
    if cls is None:
        raise SpecError(f"unknown action {data.get('type')!r}")
    fields = {k: v for k, v in data.items() if k != "type"}
    if isinstance(fields.get("bounds"), Mapping):
        fields["bounds"] = rect_of(fields["bounds"])
    try:
        return cls(**fields)
    except TypeError as err:
        raise SpecError(f"bad {cls.__name__}: {err}") from None


def instance_request(world: str, entry_id: str, fields: Mapping[bytes, bytes]) -> InstanceRequest:
    """One entry of the matchmaker's instance stream of ``world`` (fields ``kind``,
    ``match``, ``zone``, ``at_ms``, and ``request``, a serialized Assignment, and
    ``mode`` (optional) for ``create``); SpecError says why an entry cannot be used."""
    text = {k.decode(errors="replace"): v for k, v in fields.items()}
    kind = text.get("kind", b"").decode(errors="replace")
    match = text.get("match", b"").decode(errors="replace")
    zone = text.get("zone", b"").decode(errors="replace")
    mode = text.get("mode", b"").decode(errors="replace")
    if kind not in ("create", "end"):
        raise SpecError(f"kind must be create or end, not {kind!r}")
    if MATCH_RE.fullmatch(match) is None:
        raise SpecError(f"bad match id {match!r}")
    if zone != instance_zone(match):
        raise SpecError(f"zone {zone!r} is not the instance zone of match {match}")
    if len(mode) > MODE_MAX or not mode.isprintable():
        raise SpecError(f"bad mode {mode!r}")
    try:
        at = float(text.get("at_ms", b"")) / 1000.0
    except ValueError:
        raise SpecError("at_ms must be a number") from None
    if not math.isfinite(at):
        raise SpecError("at_ms must be finite")
    players: tuple[str, ...] = ()
    if kind == "create":
        assignment = matchmaking_pb2.Assignment()
        try:
            assignment.ParseFromString(text.get("request", b""))
        except Exception:  # protobuf raises DecodeError (a bare Exception subclass)
            raise SpecError("request is not a serialized Assignment") from None
        destination = assignment.destination
        if destination.kind != matchmaking_pb2.DESTINATION_KIND_INSTANCE:
            raise SpecError("request's destination is not an instance")
        if assignment.match_id != match or (destination.world, destination.zone) != (world, zone):
            raise SpecError(
                f"request names match {assignment.match_id!r} in "
                f"{destination.world}/{destination.zone}, not {match} in {world}/{zone}"
            )
        players = tuple(p.player_id for p in assignment.players)
    return InstanceRequest(entry_id, kind, match, zone, at, players, mode)
