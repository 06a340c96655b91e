"""TLS for gRPC: the one place that makes server credentials and client channels.

Servers serve TLS when ``TESSERA_TLS_CERT_FILE`` and ``TESSERA_TLS_KEY_FILE``
name a PEM certificate chain and its key (cert-manager's ``tls.crt`` and
``tls.key``); ``TESSERA_TLS_CLIENT_CA_FILE`` also requires client certificates
signed by that CA (mutual TLS). Clients verify TLS when ``TESSERA_TLS_CA_FILE``
names a PEM CA bundle: their channels to auth, matchmaking and relays, and to
zones too with ``TESSERA_TLS_ZONES=true``. ``TESSERA_TLS_SERVER_NAME`` is the
name expected in the servers' certificates (default: the address's host);
``TESSERA_TLS_CLIENT_CERT_FILE``/``..._KEY_FILE`` present a client certificate.

Everything is checked at start-up, so a bad file stops the process with a
message naming the variable: a missing or unreadable file, no PEM certificate
or key in it, a key that does not match its certificate, a certificate that
has expired or is not valid yet. A server picks up a renewed certificate and
key (cert-manager rewriting its Secret) at the first handshake after the files
change, once they pass the same checks; CA bundles and client certificates are
read once, at start-up (docs/OPERATIONS.md#tls).
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tessera.common.config import PREFIX, ConfigError, Env

log = logging.getLogger(__name__)

NO_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate chain and key, and the CA its clients must be signed
    by (``None``: no client certificate asked for)."""

    cert_chain: bytes
    key: bytes = field(repr=False)
    client_ca: bytes | None = None
    # The certificate and key files, watched for a renewal (None: never reloaded).
    files: tuple[str, str] | None = None

    @classmethod
    def from_env(cls, env: Env) -> ServerTls | None:
        """The server's TLS settings, ``None`` when no certificate is configured."""
        files = (env.string("TLS_CERT_FILE", ""), env.string("TLS_KEY_FILE", ""))
        pair = _key_pair(("TLS_CERT_FILE", files[0]), ("TLS_KEY_FILE", files[1]))
        if pair is None:
            return None
        client_ca = _ca_bundle("TLS_CLIENT_CA_FILE", env.string("TLS_CLIENT_CA_FILE", ""))
        return cls(pair[0], pair[1], client_ca, files)

    def configuration(self, chain: bytes, key: bytes) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(key, chain)], root_certificates=self.client_ca
        )

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials serving this certificate, and its renewals when it came from files."""
        if self.files is None:
            return grpc.ssl_server_credentials(
                [(self.key, self.cert_chain)],
                root_certificates=self.client_ca,
                require_client_auth=self.client_ca is not None,
            )
        return grpc.dynamic_ssl_server_credentials(
            self.configuration(self.cert_chain, self.key),
            # gRPC takes None as "no change"; its stubs do not say so.
            _Renewals(self, self.files),  # type: ignore[arg-type]
            require_client_authentication=self.client_ca is not None,
        )


class _Renewals:
    """Called by gRPC before each TLS handshake: a new certificate configuration when
    the files changed (compared by a ``stat`` of each) and pass the start-up checks,
    else None (keep serving the current one; a refused renewal is logged once)."""

    def __init__(self, tls: ServerTls, files: tuple[str, str]) -> None:
        self.tls = tls
        self.files = files
        self.seen = _stamp(files)
        self.lock = threading.Lock()  # gRPC calls from its own threads

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = _stamp(self.files)
        with self.lock:
            if stamp is None or stamp == self.seen:
                return None
            self.seen = stamp
        try:
            pair = _key_pair(("TLS_CERT_FILE", self.files[0]), ("TLS_KEY_FILE", self.files[1]))
        except ConfigError as err:
            log.warning("renewed TLS certificate refused; serving the previous one: %s", err)
            return None
        assert pair is not None  # both paths are set
        log.info("TLS certificate reloaded", extra={"cert_file": self.files[0]})
        return self.tls.configuration(*pair)


def _stamp(files: tuple[str, str]) -> tuple[tuple[int, int, int], ...] | None:
    """What changes when a file is rewritten or its symlink swapped (a Secret volume)."""
    try:
        return tuple((st.st_mtime_ns, st.st_ino, st.st_size) for st in (os.stat(f) for f in files))
    except OSError:
        return None


@dataclass(frozen=True)
class ClientTls:
    """What a client trusts (a CA bundle), the name it expects the servers to
    present, its own certificate for mutual TLS, and whether zones serve TLS."""

    ca: bytes
    server_name: str = ""
    cert_chain: bytes | None = None
    key: bytes | None = field(default=None, repr=False)
    zones: bool = False

    @classmethod
    def from_env(cls, env: Env) -> ClientTls | None:
        """The client's TLS settings, ``None`` (plaintext) without a CA bundle."""
        ca = _ca_bundle("TLS_CA_FILE", env.string("TLS_CA_FILE", ""))
        pair = _key_pair(
            ("TLS_CLIENT_CERT_FILE", env.string("TLS_CLIENT_CERT_FILE", "")),
            ("TLS_CLIENT_KEY_FILE", env.string("TLS_CLIENT_KEY_FILE", "")),
        )
        server_name = env.string("TLS_SERVER_NAME", "", pattern=r"[A-Za-z0-9.*-]{1,253}")
        zones = env.flag("TLS_ZONES", False)
        if ca is None:
            for name, set_ in (("TLS_CLIENT_CERT_FILE", pair), ("TLS_ZONES", zones)):
                if set_:
                    raise ConfigError(PREFIX + name, "(set)", "TESSERA_TLS_CA_FILE set as well")
            return None
        cert, key = pair if pair is not None else (None, None)
        return cls(ca, server_name, cert, key, zones)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert_chain
        )

    def options(self) -> tuple[tuple[str, Any], ...]:
        """Channel options: the expected server name, when one is set."""
        if not self.server_name:
            return NO_CHANNEL_OPTIONS
        return (("grpc.ssl_target_name_override", self.server_name),)


@functools.cache
def process_server_tls() -> ServerTls | None:
    """This process's server settings from its environment, read once."""
    return ServerTls.from_env(Env())


@functools.cache
def process_client_tls() -> ClientTls | None:
    """This process's client settings from its environment, read once."""
    return ClientTls.from_env(Env())


def zone_channel(address: str) -> grpc.aio.Channel:
    """:func:`channel` to a zone, with no call credentials."""
    return channel(address, zone=True)


# No transparent retries: with them, streams opened on a channel to a server that
# is stopping (its refused streams retried inside gRPC core) sometimes made the
# client process allocate without bound (grpcio 1.85.3; docs/OPERATIONS.md,
# "gRPC retries"). Every caller already treats UNAVAILABLE as retry-later.
NO_RETRIES = ("grpc.enable_retries", 0)


def channel(
    address: str,
    *,
    zone: bool = False,
    tls: ClientTls | None = None,
    interceptors: Sequence[Any] | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to ``address``: TLS verified with ``tls`` (default: this process's
    ``TESSERA_TLS_*`` settings), plaintext when there are none; a ``zone``'s
    channel is TLS only when the settings say zones serve it. gRPC's retries are
    off (:data:`NO_RETRIES`) unless ``options`` sets ``grpc.enable_retries``."""
    tls = tls or process_client_tls()
    if all(key != NO_RETRIES[0] for key, _ in options):
        options = [NO_RETRIES, *options]
    if tls is None or (zone and not tls.zones):
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(
        address,
        tls.credentials(),
        options=[*tls.options(), *options],
        interceptors=interceptors,
    )


def _read(variable: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise ConfigError(variable, path, f"a readable PEM file ({err.strerror})") from None


def _certificates(variable: str, path: str) -> tuple[bytes, list[x509.Certificate]]:
    data = _read(variable, path)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(variable, path, "a file holding PEM certificates") from None
    return data, certificates


def _ca_bundle(name: str, path: str) -> bytes | None:
    return _certificates(PREFIX + name, path)[0] if path else None


def _key_pair(cert: tuple[str, str], key: tuple[str, str]) -> tuple[bytes, bytes] | None:
    """A certificate chain and its private key (each a variable's name and the path
    it holds), both PEM, checked against each other and against the clock;
    ``None`` when neither variable is set."""
    (cert_name, cert_path), (key_name, key_path) = cert, key
    if not cert_path and not key_path:
        return None
    for name, path, other in ((cert_name, cert_path, key_name), (key_name, key_path, cert_name)):
        if not path:
            raise ConfigError(PREFIX + name, "", f"a PEM file, since {PREFIX + other} is set")
    cert_variable, key_variable = PREFIX + cert_name, PREFIX + key_name
    chain, certificates = _certificates(cert_variable, cert_path)
    leaf = certificates[0]
    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        expected = f"a certificate that has not expired (expired {leaf.not_valid_after_utc})"
        raise ConfigError(cert_variable, cert_path, expected)
    if leaf.not_valid_before_utc > now:
        expected = f"a certificate valid now (valid from {leaf.not_valid_before_utc})"
        raise ConfigError(cert_variable, cert_path, expected)
    key_pem = _read(key_variable, key_path)
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(key_variable, key_path, "an unencrypted PEM private key") from None
    if _public(private.public_key()) != _public(leaf.public_key()):
        raise ConfigError(key_variable, key_path, f"the private key of {cert_variable}")
    return chain, key_pem


def _public(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der
