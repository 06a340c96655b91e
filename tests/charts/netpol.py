"""A small evaluator of Kubernetes NetworkPolicy semantics (networking.k8s.io/v1)
over rendered manifests, for the chart's reachability tests.

What it models, after the API reference and the NetworkPolicy concept page:
- a policy applies to the pods of its namespace its ``podSelector`` selects, for
  the directions in ``policyTypes`` (absent: Ingress, plus Egress when it has
  egress rules);
- a pod no policy selects for a direction is open in that direction; one that is
  selected admits only what some rule of those policies allows (policies add up);
- a connection needs the source's egress and the destination's ingress;
- a rule with no peers admits every peer, with no ports every port; a peer is a
  ``podSelector`` (the policy's namespace), a ``namespaceSelector`` (optionally with
  a ``podSelector``) or an ``ipBlock`` (``cidr`` minus ``except``);
- ports match on protocol (default TCP) and number, ``endPort`` ranges, or a
  container port's name on the destination pod.

Simplification: an ``ipBlock`` matches only addresses outside the cluster
(``External``); the API leaves ipBlocks over pod IPs to the network plugin.
Replies of an admitted connection are not modelled (policies are stateful).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    """A pod: its namespace, labels and named container ports (name → (number, protocol))."""

    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, tuple[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class External:
    """An address outside the cluster (a game client, the API server, a managed Redis)."""

    ip: str
    ports: Mapping[str, tuple[int, str]] = field(default_factory=dict)


Endpoint = Pod | External


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Label-selector semantics: matchLabels and In/NotIn/Exists/DoesNotExist; {} selects all."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not ok:
            return False
    return True


def peer_matches(
    peer: Mapping[str, Any], namespace: str, other: Endpoint, namespaces: Mapping[str, Obj]
) -> bool:
    """Whether one NetworkPolicyPeer of a policy in ``namespace`` names ``other``."""
    if "ipBlock" in peer:
        if not isinstance(other, External):
            return False
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        excluded = any(address in ipaddress.ip_network(c) for c in block.get("except", []))
        return address in ipaddress.ip_network(block["cidr"]) and not excluded
    if isinstance(other, External):
        return False
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], namespaces[other.namespace])
    else:
        in_namespace = other.namespace == namespace
    return in_namespace and selects(peer.get("podSelector") or {}, other.labels)


def port_matches(
    ports: Iterable[Mapping[str, Any]], port: int, protocol: str, dst: Endpoint
) -> bool:
    """Whether a rule's ports (empty: all) admit ``port``/``protocol`` on ``dst``."""
    listed = list(ports)
    for entry in listed:
        if entry.get("protocol", "TCP") != protocol:
            continue
        value = entry.get("port")
        if value is None:
            return True
        if isinstance(value, str):
            if dst.ports.get(value) == (port, protocol):
                return True
        elif value <= port <= entry.get("endPort", value):
            return True
    return not listed


def policy_types(policy: Obj) -> list[str]:
    spec = policy["spec"]
    default = ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]
    types: list[str] = spec.get("policyTypes", default)
    return types


@dataclass(frozen=True)
class Connection:
    """``src`` opening a connection to ``dst`` on ``port``/``protocol``."""

    src: Endpoint
    dst: Endpoint
    port: int
    protocol: str = "TCP"


def direction_allows(
    policies: Iterable[Obj], direction: str, conn: Connection, namespaces: Mapping[str, Obj]
) -> bool:
    """Whether the policies of the pod at this end (Ingress: dst, Egress: src) admit ``conn``."""
    if direction == "Ingress":
        subject, other, key, peers_key = conn.dst, conn.src, "ingress", "from"
    else:
        subject, other, key, peers_key = conn.src, conn.dst, "egress", "to"
    if isinstance(subject, External):
        return True
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and direction in policy_types(p)
        and selects(p["spec"]["podSelector"], subject.labels)
    ]
    if not selecting:
        return True
    return any(
        port_matches(rule.get("ports") or [], conn.port, conn.protocol, conn.dst)
        and (
            not rule.get(peers_key)
            or any(
                peer_matches(peer, policy["metadata"]["namespace"], other, namespaces)
                for peer in rule[peers_key]
            )
        )
        for policy in selecting
        for rule in policy["spec"].get(key) or []
    )


def allowed(policies: Iterable[Obj], conn: Connection, namespaces: Mapping[str, Obj]) -> bool:
    """Whether ``conn`` passes the source's egress and the destination's ingress."""
    listed = list(policies)
    return direction_allows(listed, "Egress", conn, namespaces) and direction_allows(
        listed, "Ingress", conn, namespaces
    )
