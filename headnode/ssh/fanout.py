"""One command on many nodes at once: a pool of threads, one result per node, a slow or
unreachable node reported as such without holding up the others."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import paramiko

from headnode.ssh.client import Access, Target, run
from headnode.ssh.errors import SshError

OK = "ok"
FAILED = "failed"  # ran, exited non-zero
NO_SSH_ADDRESS = "no-ssh-address"


@dataclass(frozen=True)
class Node:
    """A server to run on; ``target`` is None when it has no SSH address."""

    uuid: str
    hostname: str
    target: Target | None


@dataclass
class NodeResult:
    uuid: str
    hostname: str
    status: str
    exit_code: int | None
    duration: float
    stdout: str = ""
    stderr: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def run_on_all(nodes: Sequence[Node], command: str, access: Access, timeout: float,
               parallel: int) -> list[NodeResult]:
    """Results in the order of ``nodes``."""
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="ssh") as pool:
        futures = [pool.submit(run_on_one, node, command, access, timeout) for node in nodes]
        return [future.result() for future in futures]


def run_on_one(node: Node, command: str, access: Access, timeout: float) -> NodeResult:
    if node.target is None:
        return NodeResult(node.uuid, node.hostname, NO_SSH_ADDRESS, None, 0.0,
                          error="no ssh host set: sdc server update UUID --ssh-host HOST")
    began = time.monotonic()
    try:
        out = run(node.target, command, access, timeout)
    except SshError as exc:
        return NodeResult(node.uuid, node.hostname, exc.status, None,
                          time.monotonic() - began, error=str(exc))
    except (paramiko.SSHException, OSError, EOFError) as exc:
        # the connection broke after the handshake: this node's result, not the command's
        return NodeResult(node.uuid, node.hostname, SshError.status, None,
                          time.monotonic() - began,
                          error=f"connection lost: {exc or type(exc).__name__}")
    except Exception as exc:  # noqa: BLE001 - one node's surprise must not lose the others'
        return NodeResult(node.uuid, node.hostname, SshError.status, None,
                          time.monotonic() - began, error=f"{type(exc).__name__}: {exc}")
    return NodeResult(node.uuid, node.hostname, OK if out.exit_code == 0 else FAILED,
                      out.exit_code, time.monotonic() - began, out.stdout, out.stderr)
