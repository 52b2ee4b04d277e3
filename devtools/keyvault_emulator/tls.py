"""The vault's self-signed TLS certificate for 127.0.0.1, which clients pin as their CA bundle."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devtools.keyvault_emulator.protocol import HOST

CERT_VALIDITY = dt.timedelta(days=365)
CERT_RENEW_MARGIN = dt.timedelta(days=1)


def ensure_certificate(data_dir: Path) -> tuple[Path, Path]:
    """Reuses ``cert.pem``/``key.pem`` while valid so clients that pinned the CA bundle keep working
    across restarts; otherwise writes a new self-signed pair."""
    cert_path, key_path = data_dir / "cert.pem", data_dir / "key.pem"
    if not _certificate_usable(cert_path, key_path):
        _write_certificate(cert_path, key_path)
    return cert_path, key_path


def _certificate_usable(cert_path: Path, key_path: Path) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound):
        return False
    now = dt.datetime.now(dt.UTC)
    return (
        cert.not_valid_before_utc <= now
        and cert.not_valid_after_utc > now + CERT_RENEW_MARGIN
        and ipaddress.ip_address(HOST) in san.get_values_for_type(x509.IPAddress)
        and cert.public_key() == key.public_key()
    )


def _write_certificate(cert_path: Path, key_path: Path) -> None:
    """One self-signed leaf that is also the trust anchor; EC P-256 because it is instant to make."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Key Vault emulator (127.0.0.1)")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path.unlink(missing_ok=True)
    with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        handle.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
