"""Triton's own CLI (npm ``triton`` 7.x) for tests: installed once per machine, run with a
fresh key in a temporary HOME, no ssh-agent, and a profile from environment variables."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.httpsig_client import Signer

REPO = Path(__file__).resolve().parents[2]
ENSURE_TRITON = REPO / "scripts" / "ensure-triton.sh"
COMMAND_TIMEOUT = 120


@pytest.fixture(scope="module")
def triton_bin() -> str:
    """The CLI, installed once per machine by scripts/ensure-triton.sh."""
    done = subprocess.run([str(ENSURE_TRITON)], capture_output=True, text=True, timeout=600,
                          check=False)
    if done.returncode != 0:
        pytest.fail(f"could not install the triton CLI:\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def home_with_key(base: Path, signer: Signer) -> Path:
    """A HOME whose ~/.ssh holds the signer's key pair (the CLI finds it by fingerprint)."""
    ssh = base / ".ssh"
    ssh.mkdir(mode=0o700)
    private = signer.private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption())
    (ssh / "id_rsa").write_bytes(private)
    (ssh / "id_rsa").chmod(0o600)
    (ssh / "id_rsa.pub").write_text(signer.public_line + "\n")
    return base


def triton_runner(triton_bin: str, home: Path, account: str, key_id: str,
                  url: str, extra_env: dict[str, str] | None = None) -> Any:
    """``extra_env``: more of the CLI's environment (a PATH whose ``ssh`` runs in a test's
    network namespace, for ``triton ssh``)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SDC_", "TRITON_", "SSH_AUTH_SOCK"))}
    env.update({"HOME": str(home), "TRITON_URL": url, "TRITON_ACCOUNT": account,
                "TRITON_KEY_ID": key_id, "NO_COLOR": "1", **(extra_env or {})})

    def run(*args: str, ok: bool = True) -> str:
        done = subprocess.run([triton_bin, *args], capture_output=True, text=True, env=env,
                              timeout=COMMAND_TIMEOUT, check=False)
        output = done.stdout + done.stderr
        if ok:
            assert done.returncode == 0, f"triton {' '.join(args)} failed:\n{output}"
        return output

    return run
