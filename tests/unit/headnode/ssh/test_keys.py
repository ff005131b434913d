"""The head node's own SSH key: made once (0600, in a 0700 directory), the same key after,
refused when others may read it; its public line is one authorized_keys line."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from headnode.ssh.errors import SshError
from headnode.ssh.keys import head_key, head_key_path, public_line


def test_made_once_0600_and_kept(tmp_path: Path) -> None:
    key = head_key(tmp_path)
    path = head_key_path(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert head_key(tmp_path).asbytes() == key.asbytes()
    kind, blob, comment = public_line(key).split(" ")
    assert kind == "ssh-ed25519" and comment.startswith("sdc-headnode@")
    assert base64.b64decode(blob) == key.asbytes()  # the public key itself


def test_a_key_others_may_read_is_refused(tmp_path: Path) -> None:
    head_key(tmp_path)
    head_key_path(tmp_path).chmod(0o644)
    with pytest.raises(SshError, match="mode 0644: others may read it"):
        head_key(tmp_path)
