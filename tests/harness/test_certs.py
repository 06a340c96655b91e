"""The test CA: what it issues is what the TLS tests claim it is."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tessera.harness.certs import Authority


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_a_server_certificate_for_loopback(tmp_path: Path) -> None:
    ca = Authority()
    issued = ca.issue(tmp_path / "s")
    cert = load(issued.cert)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc < now < cert.not_valid_after_utc
    assert cert.issuer == load(ca.write_ca(tmp_path / "ca.crt")).subject
    cert.verify_directly_issued_by(ca.cert)  # raises if the CA did not sign it
    key = serialization.load_pem_private_key(issued.key.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()


def test_expired_future_and_client_certificates(tmp_path: Path) -> None:
    ca = Authority()
    now = datetime.datetime.now(datetime.UTC)
    expired = load(ca.issue(tmp_path / "e", valid_from_h=-48, valid_for_h=24).cert)
    assert expired.not_valid_after_utc < now
    future = load(ca.issue(tmp_path / "f", valid_from_h=24).cert)
    assert future.not_valid_before_utc > now
    client = load(ca.issue(tmp_path / "c", ("backend",), client=True).cert)
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca_cert = load(ca.write_ca(tmp_path / "ca.crt"))
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
