"""Small commands on a node, each an argument list (headnode.ssh.client.Connection.run
quotes them): a failure is a NodeSetupError naming the step's code and the node's words."""

from __future__ import annotations

import hashlib
import shlex

from headnode.nodesetup.errors import NodeSetupError
from headnode.ssh.client import Connection, Output

SHORT = 60.0


def run_ok(conn: Connection, argv: list[str], code: str, timeout: float = SHORT,
           input: bytes | None = None) -> Output:  # noqa: A002
    out = conn.run(argv, timeout, input=input)
    if out.exit_code != 0:
        # argv never holds a secret (those go up as files, headnode.ssh's put)
        said = (out.stderr or out.stdout)[-1500:]
        raise NodeSetupError(code, f"{conn.where}: `{shlex.join(argv)[:300]}` exited "
                             f"{out.exit_code}: {said}")
    return out


def exists(conn: Connection, path: str) -> bool:
    return conn.run(["test", "-e", path], SHORT).exit_code == 0


def remove(conn: Connection, *paths: str) -> None:
    if not paths:
        return
    run_ok(conn, ["rm", "-rf", "--", *paths], "RemoveFailed")


def digests(conn: Connection, paths: list[str]) -> dict[str, str]:
    """path -> sha256 of each of ``paths`` that exists (its content stays on the node)."""
    out = conn.run(["sha256sum", "--", *paths], SHORT)
    found = {}
    for line in out.stdout.splitlines():
        digest, _, path = line.partition("  ")
        found[path] = digest
    return found


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def link(conn: Connection, link_path: str, target: str) -> None:
    """Point ``link_path`` at ``target`` in one rename: no moment without the link."""
    tmp = f"{link_path}.new"
    run_ok(conn, ["ln", "-sfn", target, tmp], "LinkFailed")
    run_ok(conn, ["mv", "-T", tmp, link_path], "LinkFailed")


def children(conn: Connection, directory: str) -> list[str]:
    out = conn.run(["find", directory, "-mindepth", "1", "-maxdepth", "1", "-printf",
                    "%f\\n"], SHORT)
    return sorted(out.stdout.split()) if out.exit_code == 0 else []
