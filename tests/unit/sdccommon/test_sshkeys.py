"""Public keys and their fingerprints, compared with what ssh-keygen prints for the same file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sdccommon.sshkeys import BadKey, parse_public_key
from tests.unit.headnode.auth.conftest import KEY_KINDS, private_key, public_line

SSH_KEYGEN = shutil.which("ssh-keygen")


def keygen_fingerprint(path: Path, hash_name: str) -> str:
    assert SSH_KEYGEN is not None
    out = subprocess.run([SSH_KEYGEN, "-l", "-E", hash_name, "-f", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]  # "BITS FINGERPRINT COMMENT (TYPE)"


@pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen is not installed")
@pytest.mark.parametrize("kind", KEY_KINDS)
def test_fingerprints_match_ssh_keygen(kind: str, tmp_path: Path) -> None:
    line = public_line(private_key(kind))
    path = tmp_path / "key.pub"
    path.write_text(line + "\n")
    parsed = parse_public_key(line)
    assert "MD5:" + parsed.fingerprint_md5 == keygen_fingerprint(path, "md5")
    assert parsed.fingerprint_sha256 == keygen_fingerprint(path, "sha256")
    assert parsed.text == line and parsed.comment == "test@example"


def test_a_key_without_comment_and_with_surrounding_blank_lines() -> None:
    bare = " ".join(public_line(private_key("ed25519")).split()[:2])
    parsed = parse_public_key(f"\n  {bare}  \n\n")
    assert parsed.text == bare and parsed.key_type == "ssh-ed25519"


@pytest.mark.parametrize("text", [
    "", "   ", "ssh-rsa", "ssh-rsa not-base64!!", "ssh-rsa AAAAB3NzaC1yc2E=",
    "ssh-dss AAAAB3NzaC1kc3MAAACBAP", "hello world",
])
def test_bad_keys_are_refused(text: str) -> None:
    with pytest.raises(BadKey):
        parse_public_key(text)


def test_two_keys_in_one_text_are_refused() -> None:
    two = public_line(private_key("ed25519")) + "\n" + public_line(private_key("ed25519"))
    with pytest.raises(BadKey, match="one line"):
        parse_public_key(two)


def test_a_key_whose_type_word_lies_is_refused() -> None:
    rsa_line = public_line(private_key("rsa")).split()
    with pytest.raises(BadKey):
        parse_public_key(f"ssh-ed25519 {rsa_line[1]}")
