"""A certificate for a head node on this machine (``sdc up``, tests): a CA made for it, and
a server certificate for 127.0.0.1 and localhost signed by that CA.

The CA's key is thrown away once it has signed: nobody, not even whoever reads the data
dir later, can make another certificate the clients of this head node would trust. Trusting
the CA file (``SDC_CA_FILE``, ``curl --cacert``, ``NODE_EXTRA_CA_CERTS``) trusts this one
server certificate only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: how long a made certificate lasts; one that has less than RENEW_BEFORE left is made again
VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=7)
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class LocalTls:
    """The files: the CA to trust, the server's certificate and key."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def cert_file(self) -> Path:
        return self.directory / "cert.pem"

    @property
    def key_file(self) -> Path:
        return self.directory / "key.pem"


def local_tls(directory: Path, now: datetime.datetime | None = None) -> tuple[LocalTls, bool]:
    """The files in ``directory``, made (again) unless a certificate there is good for a
    while yet. Returns them and whether they were made now."""
    tls = LocalTls(directory)
    now = now or datetime.datetime.now(datetime.UTC)
    if still_good(tls, now):
        return tls, False
    make_local_tls(tls, now)
    return tls, True


def still_good(tls: LocalTls, now: datetime.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
        x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
        serialization.load_pem_private_key(tls.key_file.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - now > RENEW_BEFORE


def make_local_tls(tls: LocalTls, now: datetime.datetime) -> None:
    tls.directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            f"sdc local CA {os.uname().nodename}")])
    ca_cert = (_builder(ca_name, ca_name, ca_key.public_key(), now)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=False, content_commitment=False, key_encipherment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=True,
                   crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in LOOPBACK_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in LOOPBACK_ADDRESSES]
    cert = (_builder(subject, ca_name, key.public_key(), now)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    write_new_file(tls.key_file, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600)
    write_new_file(tls.cert_file, cert.public_bytes(pem), 0o644)
    write_new_file(tls.ca_file, ca_cert.public_bytes(pem), 0o644)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             now: datetime.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            # a minute back: a client whose clock is a little behind still accepts it
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False))


def write_new_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``, created with ``mode`` (a key is never readable by
    others, not even for a moment)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
