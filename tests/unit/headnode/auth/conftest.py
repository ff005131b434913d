"""Keys made in the test with cryptography, requests signed as node-smartdc-auth signs them."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

KEY_KINDS = ("rsa", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519")
#: the algorithm name a client sends for each kind of key, and the hash it signs with
ALGORITHMS: dict[str, tuple[str, Any]] = {
    "rsa": ("rsa-sha256", hashes.SHA256()),
    "ecdsa-p256": ("ecdsa-sha256", hashes.SHA256()),
    "ecdsa-p384": ("ecdsa-sha384", hashes.SHA384()),
    "ecdsa-p521": ("ecdsa-sha512", hashes.SHA512()),
    "ed25519": ("ed25519-sha512", None),
}
CURVES = {"ecdsa-p256": ec.SECP256R1, "ecdsa-p384": ec.SECP384R1, "ecdsa-p521": ec.SECP521R1}


def private_key(kind: str) -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind in CURVES:
        return ec.generate_private_key(CURVES[kind]())
    return ed25519.Ed25519PrivateKey.generate()


def public_line(key: Any, comment: str = "test@example") -> str:
    text = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()
    return f"{text} {comment}"


def sign(key: Any, kind: str, text: str) -> str:
    _, digest = ALGORITHMS[kind]
    data = text.encode()
    if isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(data, padding.PKCS1v15(), digest)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(data, ec.ECDSA(digest))
    else:
        raw = key.sign(data)
    return base64.b64encode(raw).decode()


def signed_headers(key: Any, kind: str, key_id: str, method: str, target: str, *,
                   date: str | None = None,
                   signed: Iterable[str] = ("(request-target)", "date"),
                   algorithm: str | None = None) -> dict[str, str]:
    date = date or formatdate(usegmt=True)
    names = list(signed)
    lines = [f"(request-target): {method.lower()} {target}" if n == "(request-target)"
             else f"{n}: {date}" for n in names]
    signature = sign(key, kind, "\n".join(lines))
    algorithm = algorithm or ALGORITHMS[kind][0]
    return {"Date": date, "Authorization": (
        f'Signature keyId="{key_id}",algorithm="{algorithm}",'
        f'headers="{" ".join(names)}",signature="{signature}"')}
