"""``sdc server exec`` and ``sdc server ssh-key`` against the real operator API (on the
test's PostgreSQL, served on 127.0.0.1) and two real OpenSSH servers standing for two nodes:
per-node exit codes and output, a stopped node, a slow node, first contact, a changed host
key, a key a node does not accept, and bad --servers values; `sdc server update --ssh-*`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask

from headnode.cli.main import main
from headnode.ssh.keys import head_key, public_line
from headnode.store.models import Server
from tests.support.procs import ProcessGroup
from tests.support.sshd import Sshd, restart_with_new_host_key, start_sshd
from tests.support.wsgi import served
from tests.unit.headnode.api.conftest import make_server as add_server

SDC = str(Path(sys.executable).parent / "sdc")
# the SSH server's own port, as the node's shell sees it (the last word of SSH_CONNECTION)
SAYS_PORT = 'echo "port ${SSH_CONNECTION##* }"; echo "to stderr" >&2'


@pytest.fixture
def api_url(app: Flask) -> Iterator[str]:
    with served(app) as url:
        yield url


@dataclass
class Fleet:
    api_url: str
    data_dir: Path
    nodes: list[Sshd]
    servers: list[Server]

    def env(self) -> dict[str, str]:
        return {"SDC_API_URL": self.api_url, "SDC_OPERATOR_TOKEN": "test-token",
                "SDC_DATA_DIR": str(self.data_dir)}

    def sdc(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=self.env())

    def exec_json(self, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
        result = self.sdc("server", "exec", "--json", *args)
        assert "Traceback" not in result.output, result.output
        return result.exit_code, {r["hostname"]: r for r in json.loads(result.stdout)}


@pytest.fixture
def fleet(procs: ProcessGroup, tmp_path: Path, api_url: str, ctx: Any) -> Fleet:
    """Two set-up servers on two sshds that let the head node's key in; a set-up server with
    no SSH address; a server not set up (left out of --servers all)."""
    data_dir = tmp_path / "head"
    authorized = [public_line(head_key(data_dir))]
    nodes = [start_sshd(procs, tmp_path / "nodes", f"cn{i}", authorized) for i in (1, 2)]
    servers = [add_server(ctx, hostname=node.name, ssh_host="127.0.0.1", ssh_port=node.port,
                          ssh_user=node.user) for node in nodes]
    add_server(ctx, hostname="cn-no-ssh")
    add_server(ctx, hostname="cn-not-setup", setup=False, ssh_host="127.0.0.1", ssh_port=1)
    return Fleet(api_url, data_dir, nodes, servers)


def test_first_contact_needs_the_flag_then_runs_on_both(fleet: Fleet) -> None:
    known_hosts = fleet.data_dir / "ssh" / "known_hosts"
    code, rows = fleet.exec_json("--", "true")
    assert code == 1
    assert {rows[n]["status"] for n in ("cn1", "cn2")} == {"host-key-unknown"}
    assert "--accept-new-host-key" in rows["cn1"]["error"]
    assert rows["cn-no-ssh"]["status"] == "no-ssh-address"
    assert "cn-not-setup" not in rows
    assert not known_hosts.exists()

    first = fleet.nodes[0].port
    code, rows = fleet.exec_json("--accept-new-host-key", "--", "sh", "-c",
                                 f'{SAYS_PORT}; test "${{SSH_CONNECTION##* }}" = {first}')
    assert code == 1  # cn2's test fails, and cn-no-ssh has no address
    for node, exit_code, status in ((fleet.nodes[0], 0, "ok"), (fleet.nodes[1], 1, "failed")):
        row = rows[node.name]
        assert (row["status"], row["exit_code"]) == (status, exit_code)
        assert (row["stdout"], row["stderr"]) == (f"port {node.port}", "to stderr")
        assert 0 < row["duration"] < 5
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    assert len(known_hosts.read_text().splitlines()) == 2

    # each argument is one word on the node: nothing in it is read by the node's shell
    only = ",".join(s.uuid for s in fleet.servers)
    code, rows = fleet.exec_json("--servers", only, "--", "echo", "a;b", "$(id)", "`id`")
    assert code == 0
    assert {rows[n]["stdout"] for n in ("cn1", "cn2")} == {"a;b $(id) `id`"}


def test_table_shows_each_node(fleet: Fleet) -> None:
    result = fleet.sdc("server", "exec", "--accept-new-host-key",
                       "--servers", fleet.servers[0].uuid, "--", "echo", "[bold]hi")
    assert result.exit_code == 0, result.output
    assert fleet.servers[0].uuid in result.stdout and "[bold]hi" in result.stdout
    assert "1 of 1 server(s) ok" in result.stdout


def test_stopped_and_slow_nodes_do_not_hold_up_the_other(procs: ProcessGroup,
                                                         fleet: Fleet) -> None:
    both = ",".join(s.uuid for s in fleet.servers)
    assert fleet.exec_json("--servers", both, "--accept-new-host-key", "--", "true")[0] == 0

    second = fleet.nodes[1].port
    began = time.monotonic()
    code, rows = fleet.exec_json(
        "--servers", both, "--timeout", "1.5", "--", "sh", "-c",
        f'if [ "${{SSH_CONNECTION##* }}" = {second} ]; then sleep 5; fi; echo done')
    took = time.monotonic() - began
    assert code == 1
    assert (rows["cn1"]["status"], rows["cn1"]["stdout"]) == ("ok", "done")
    assert rows["cn2"]["status"] == "timeout" and rows["cn2"]["exit_code"] is None
    assert "still running after 1.5 s" in rows["cn2"]["error"]
    assert took < 4

    procs.stop(fleet.nodes[1].name)
    code, rows = fleet.exec_json("--servers", both, "--", "echo", "up")
    assert code == 1
    assert (rows["cn1"]["status"], rows["cn1"]["stdout"]) == ("ok", "up")
    assert rows["cn2"]["status"] == "unreachable"
    assert "connection refused" in rows["cn2"]["error"]


def test_a_changed_host_key_is_refused(procs: ProcessGroup, fleet: Fleet) -> None:
    both = ",".join(s.uuid for s in fleet.servers)
    fleet.exec_json("--servers", both, "--accept-new-host-key", "--", "true")
    known = (fleet.data_dir / "ssh" / "known_hosts").read_text()
    restart_with_new_host_key(procs, fleet.nodes[1])
    code, rows = fleet.exec_json("--servers", both, "--accept-new-host-key", "--", "true")
    assert code == 1
    assert rows["cn1"]["status"] == "ok"
    assert rows["cn2"]["status"] == "host-key-changed"
    error = rows["cn2"]["error"]
    assert f"host key of [127.0.0.1]:{fleet.nodes[1].port} changed" in error
    assert error.count("ssh-ed25519 SHA256:") == 2
    assert (fleet.data_dir / "ssh" / "known_hosts").read_text() == known


def test_a_node_that_refuses_the_key_is_an_authentication_error(
        procs: ProcessGroup, tmp_path: Path, fleet: Fleet, ctx: Any) -> None:
    stranger = start_sshd(procs, tmp_path / "nodes", "cn3",
                          [public_line(head_key(tmp_path / "another-head"))])
    server = add_server(ctx, hostname="cn3", ssh_host="127.0.0.1", ssh_port=stranger.port,
                        ssh_user=stranger.user)
    code, rows = fleet.exec_json("--servers", server.uuid, "--accept-new-host-key", "--",
                                 "true")
    assert code == 1
    assert rows["cn3"]["status"] == "auth-failed"
    assert "refused the head node's key" in rows["cn3"]["error"]


@pytest.mark.parametrize(("spec", "code", "says"), [
    ("nope", 2, "'nope': give 'all' or server UUIDs"),
    ("", 2, "nothing: give 'all'"),
    ("all,x", 2, "'all', 'x'"),
    ("00000000-0000-0000-0000-000000000000", 1,
     "no such server: 00000000-0000-0000-0000-000000000000"),
])
def test_bad_servers_values_are_clear(fleet: Fleet, spec: str, code: int, says: str) -> None:
    result = fleet.sdc("server", "exec", "--servers", spec, "--", "true")
    assert result.exit_code == code
    assert says in result.output
    assert "Traceback" not in result.output
    assert not (fleet.data_dir / "ssh" / "known_hosts").exists()


def test_a_command_is_required(fleet: Fleet) -> None:
    result = fleet.sdc("server", "exec")
    assert result.exit_code == 2 and "Missing argument" in result.output


def test_update_sets_the_ssh_address_and_get_shows_it(fleet: Fleet) -> None:
    uuid = fleet.servers[0].uuid
    result = fleet.sdc("server", "update", uuid, "--ssh-host", "cn1.example.com",
                       "--ssh-port", "2222", "--ssh-user", "ops")
    assert result.exit_code == 0, result.output
    shown = json.loads(fleet.sdc("server", "get", uuid, "--json").stdout)
    assert (shown["ssh_host"], shown["ssh_port"], shown["ssh_user"]) == (
        "cn1.example.com", 2222, "ops")
    assert "cn1.example.com" in fleet.sdc("server", "get", uuid).stdout

    bad = fleet.sdc("server", "update", uuid, "--ssh-host", "-oProxyCommand=x")
    assert bad.exit_code == 1 and "ssh_host" in bad.output
    assert fleet.sdc("server", "update", uuid, "--ssh-port", "0").exit_code == 2
    cleared = fleet.sdc("server", "update", uuid, "--ssh-host", "", "--json")
    assert json.loads(cleared.stdout)["ssh_host"] is None


def test_ssh_key_prints_the_authorized_line(fleet: Fleet) -> None:
    result = fleet.sdc("server", "ssh-key")
    assert result.exit_code == 0
    line = result.stdout.strip()
    assert line == public_line(head_key(fleet.data_dir))
    assert line in fleet.nodes[0].authorized_keys.read_text()
    assert "PRIVATE" not in result.output
    assert (fleet.data_dir / "ssh" / "id_ed25519").stat().st_mode & 0o777 == 0o600


def test_a_port_that_is_not_ssh_is_one_clear_error(fleet: Fleet, ctx: Any) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer_http() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

        talker = threading.Thread(target=answer_http, daemon=True)
        talker.start()
        server = add_server(ctx, hostname="cn-http", ssh_host="127.0.0.1",
                            ssh_port=listener.getsockname()[1])
        # a process of its own: in pytest's, pytest's log handlers would hide what Python
        # prints on stderr for a library logging with no handler configured
        result = subprocess.run(
            [SDC, "server", "exec", "--json", "--servers", server.uuid, "--", "true"],
            env={**os.environ, **fleet.env()}, capture_output=True, text=True, timeout=60,
            check=False)
        talker.join(timeout=5)
    assert result.returncode == 1
    row = json.loads(result.stdout)[0]
    assert row["status"] == "error" and "SSH handshake failed" in row["error"]
    assert result.stderr == ""  # paramiko's own traceback is not printed
