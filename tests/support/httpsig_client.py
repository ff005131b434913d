"""Sign CloudAPI requests in tests, as the triton CLI does (HTTP Signature, draft-cavage):
``Authorization: Signature keyId="/LOGIN/keys/MD5",algorithm="rsa-sha256",
headers="(request-target) date",signature="..."``."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def new_private_key(kind: str = "rsa") -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


@dataclass
class Signer:
    """One account's key pair, able to sign requests for it."""

    login: str
    kind: str = "rsa"
    private: PrivateKey = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.private is None:
            self.private = new_private_key(self.kind)

    @property
    def public_line(self) -> str:
        text = self.private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                      serialization.PublicFormat.OpenSSH)
        return f"{text.decode()} {self.login}@test"

    @property
    def fingerprint(self) -> str:
        """The MD5 fingerprint, as ``ssh-keygen -E md5 -l`` prints it (without ``MD5:``)."""
        blob = base64.b64decode(self.public_line.split()[1])
        digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
        return ":".join(digest[i:i + 2] for i in range(0, 32, 2))

    @property
    def algorithm(self) -> str:
        return {"rsa": "rsa-sha256", "ecdsa": "ecdsa-sha256"}.get(self.kind, "ed25519")

    def sign_text(self, text: str) -> str:
        data = text.encode()
        key = self.private
        if isinstance(key, rsa.RSAPrivateKey):
            raw = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            raw = key.sign(data, ec.ECDSA(hashes.SHA256()))
        else:
            raw = key.sign(data)
        return base64.b64encode(raw).decode()

    def headers(self, method: str, target: str, *, date: str | None = None,
                signed: tuple[str, ...] = ("(request-target)", "date"),
                key_id: str | None = None) -> dict[str, str]:
        """``Date`` and ``Authorization`` for ``METHOD target`` (target = path?query)."""
        date = date or formatdate(usegmt=True)
        lines = []
        for name in signed:
            if name == "(request-target)":
                lines.append(f"(request-target): {method.lower()} {target}")
            else:
                lines.append(f"{name}: {date}")
        signature = self.sign_text("\n".join(lines))
        key_id = key_id or f"/{self.login}/keys/{self.fingerprint}"
        auth = (f'Signature keyId="{key_id}",algorithm="{self.algorithm}",'
                f'headers="{" ".join(signed)}",signature="{signature}"')
        return {"Date": date, "Authorization": auth}


def http_date(unix_time: float) -> str:
    return formatdate(unix_time, usegmt=True)


def signed_call(client: Any, signer: Signer, method: str, target: str,
                **kwargs: Any) -> Any:
    """A Flask test client (or anything with ``open``) request, signed."""
    headers = {**signer.headers(method, target), **kwargs.pop("headers", {})}
    return client.open(target, method=method.upper(), headers=headers, **kwargs)
