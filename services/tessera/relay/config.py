"""Relay settings from TESSERA_* environment variables (docs/RELAY.md)."""

from __future__ import annotations

import base64
import binascii
import socket
from dataclasses import dataclass

from tessera.common.config import ConfigError, Env, ServiceClient
from tessera.relay.upstream import INPUT_LEAD

# The generation-0 threshold the relay runs with (CPython's default: 700): in steady
# state nothing then triggers a collection (docs/RELAY.md, "Garbage collection").
GC_THRESHOLD = 10_000


def uvloop_enabled(env: Env | None = None) -> bool:
    """TESSERA_RELAY_UVLOOP: run the relay on uvloop's event loop (read before the
    loop exists, so apart from :class:`RelayConfig`)."""
    return (env or Env()).flag("RELAY_UVLOOP", False)


@dataclass(frozen=True)
class RelayConfig:
    world: str
    relay_id: str
    udp_host: str
    udp_port: int
    public_address: str
    auth_address: str
    connect_key: bytes
    batch_ms: float
    # Inputs are held until this fraction of a zone's tick period before its next
    # tick (docs/RELAY.md, "Input batches"); 1: never held.
    input_lead: float
    upstream_timeout_s: float
    default_timeout_s: float
    packets_per_s: float
    bytes_per_s: float
    handshakes_per_s: float
    pings_per_source_s: float
    handshakes_per_source_s: float
    connect_timeout_s: float
    zone_silence_s: float
    # How often the relay looks for zones to open a warm link to; 0: never.
    warm_links_s: float
    orphan_grace_s: float
    drain_s: float
    udp_buffer_bytes: int
    # The garbage collector's generation-0 threshold once start-up is frozen
    # (docs/RELAY.md, "Garbage collection"); 0: no automatic collections.
    gc_threshold: int
    # Its own credentials for auth's ServiceLogin: the zones accept its calls with them.
    service_client: ServiceClient
    # Relay processes sharing the UDP and gRPC ports (SO_REUSEPORT; docs/RELAY.md,
    # "Worker processes"), and this process's number among them (0: the parent;
    # set by the parent for its children).
    workers: int = 1
    worker: int = 0

    @property
    def reuse_port(self) -> bool:
        """Bind the UDP port with SO_REUSEPORT (only when sharing it with workers)."""
        return self.workers > 1 or self.worker > 0

    @classmethod
    def from_env(cls, env: Env | None = None) -> RelayConfig:
        env = env or Env()
        udp_port = env.integer("UDP_PORT", 7777, lo=0, hi=65535)
        workers = env.integer("RELAY_WORKERS", 1, lo=1, hi=64)
        worker = env.integer("RELAY_WORKER", 0, lo=0, hi=63)
        if worker and workers > 1:
            raise ConfigError(
                "TESSERA_RELAY_WORKERS", str(workers), "1 in a worker (TESSERA_RELAY_WORKER set)"
            )
        return cls(
            world=env.string("WORLD", "default", pattern=r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"),
            relay_id=env.string("RELAY_ID", socket.gethostname()),
            udp_host=env.string("UDP_HOST", "0.0.0.0"),
            udp_port=udp_port,
            public_address=env.string("RELAY_PUBLIC_ADDRESS", "", pattern=r"\S+:\d{1,5}"),
            auth_address=env.string("AUTH_ADDRESS", "127.0.0.1:50051", pattern=r"\S+:\d{1,5}"),
            connect_key=_connect_key(env),
            batch_ms=env.number("RELAY_BATCH_MS", 0.5, lo=0.0, hi=100.0),
            input_lead=env.number("RELAY_INPUT_LEAD", INPUT_LEAD, lo=0.05, hi=1.0),
            upstream_timeout_s=env.number("RELAY_UPSTREAM_TIMEOUT_S", 10.0, lo=0.5, hi=600.0),
            default_timeout_s=env.number("RELAY_IDLE_TIMEOUT_S", 10.0, lo=1.0, hi=600.0),
            packets_per_s=env.number("RELAY_PACKETS_PER_S", 200.0, lo=1.0),
            bytes_per_s=env.number("RELAY_BYTES_PER_S", 64_000.0, lo=100.0),
            handshakes_per_s=env.number("RELAY_HANDSHAKES_PER_S", 2_000.0, lo=1.0),
            pings_per_source_s=env.number("RELAY_PINGS_PER_SOURCE_S", 20.0, lo=0.1),
            handshakes_per_source_s=env.number("RELAY_HANDSHAKES_PER_SOURCE_S", 20.0, lo=0.1),
            connect_timeout_s=env.number("RELAY_CONNECT_TIMEOUT_S", 5.0, lo=0.1, hi=60.0),
            zone_silence_s=env.number("RELAY_ZONE_SILENCE_S", 1.0, lo=0.1, hi=60.0),
            warm_links_s=env.number("RELAY_WARM_LINKS_S", 0.25, lo=0.0, hi=60.0),
            orphan_grace_s=env.number("RELAY_ORPHAN_GRACE_S", 30.0, lo=0.5, hi=3600.0),
            drain_s=env.number("RELAY_DRAIN_S", 5.0, lo=0.0, hi=3600.0),
            udp_buffer_bytes=env.integer("UDP_BUFFER_BYTES", 0, lo=0, hi=1 << 30),
            gc_threshold=env.integer("RELAY_GC_THRESHOLD", GC_THRESHOLD, lo=0, hi=10_000_000),
            service_client=ServiceClient.from_env(env, "relay"),
            workers=workers,
            worker=worker,
        )


def _connect_key(env: Env) -> bytes:
    """TESSERA_CONNECT_KEY: base64 of the 32-byte key auth seals channel keys with."""
    raw = env.string("CONNECT_KEY", "")
    expected = "base64 of exactly 32 bytes (the key shared with auth)"
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("TESSERA_CONNECT_KEY", raw, expected) from None
    if len(key) != 32:
        raise ConfigError("TESSERA_CONNECT_KEY", "<hidden>" if raw else raw, expected)
    return key
