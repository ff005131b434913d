"""OpenSSH public keys: parse one line, and name it by its fingerprints as ssh-keygen does."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

#: the key types a CloudAPI signature can be made with (DSA is refused: no modern client
#: signs with it and cryptography no longer loads ssh-dss lines by default)
KEY_TYPES = ("ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "ssh-ed25519")
MAX_KEY_CHARS = 16384


class BadKey(ValueError):
    """The text is not an OpenSSH public key of a supported type."""


@dataclass(frozen=True)
class ParsedKey:
    key: PublicKey
    key_type: str  # ssh-rsa, ecdsa-sha2-nistp256, ssh-ed25519...
    blob: bytes  # the decoded base64 field: what fingerprints hash
    comment: str
    text: str  # "TYPE BASE64 [COMMENT]" normalised to one line

    @property
    def fingerprint_md5(self) -> str:
        return md5_fingerprint(self.blob)

    @property
    def fingerprint_sha256(self) -> str:
        return sha256_fingerprint(self.blob)


def md5_fingerprint(blob: bytes) -> str:
    """``ssh-keygen -l -E md5`` without its ``MD5:`` prefix: CloudAPI's key fingerprint."""
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def sha256_fingerprint(blob: bytes) -> str:
    """``ssh-keygen -l -E sha256``: ``SHA256:`` and unpadded base64."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_public_key(text: str) -> ParsedKey:
    """One ``authorized_keys``-style line (options before the type are not accepted)."""
    if not isinstance(text, str) or not text.strip():
        raise BadKey("the key is empty")
    if len(text) > MAX_KEY_CHARS:
        raise BadKey("the key is too long")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) != 1:
        raise BadKey("expected one line: TYPE BASE64 [COMMENT]")
    parts = lines[0].split(None, 2)
    if len(parts) < 2:
        raise BadKey("expected TYPE BASE64 [COMMENT]")
    key_type, encoded = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) > 2 else ""
    if key_type not in KEY_TYPES:
        raise BadKey(f"unsupported key type {key_type!r} (use one of {', '.join(KEY_TYPES)})")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadKey("the key's base64 is not valid") from exc
    try:
        key = load_ssh_public_key(f"{key_type} {encoded}".encode())
    except (ValueError, TypeError) as exc:
        raise BadKey(f"not a valid {key_type} key") from exc
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey
                      | ed25519.Ed25519PublicKey):
        raise BadKey(f"unsupported key type {key_type!r}")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 1024:
        raise BadKey("RSA keys must have at least 1024 bits")
    line = f"{key_type} {encoded}" + (f" {comment}" if comment else "")
    return ParsedKey(key=key, key_type=key_type, blob=blob, comment=comment, text=line)
