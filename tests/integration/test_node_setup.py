"""Two compute nodes brought in over SSH, end to end: a real head node (API, worker, beat on
the test's PostgreSQL and Redis) and two real OpenSSH servers standing for two nodes, each
with its own root directory (the node's install prefix) on its own loopback port.

`sdc server setup` installs a real agent on each from a wheel built from this checkout (the
sim backend: the node's machines are simulated, its agent, Redis traffic and credentials
are real), the agent registers and heartbeats, a machine is provisioned onto each, `sdc
server exec` runs across both, a second setup changes nothing, `upgrade-agent` rolls a
rebuilt wheel with a bumped version onto both, `forget` is refused while machines remain,
and the failures an operator meets say what is wrong: a changed host key, a key the node
refuses, a host that never answers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from headnode.cli.client import OpsClient
from tests.support.procs import ProcessGroup, pid_alive
from tests.support.sshd import Sshd, operator_key, restart_with_new_host_key, start_sshd
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(900)

SDC = str(Path(sys.executable).parent / "sdc")
REPO = Path(__file__).resolve().parents[2]
#: no local agents: every node of this cloud comes in over SSH
AGENT_COUNT = 0
#: the version the upgrade rolls out: this checkout's, bumped
UPGRADE_VERSION = "0.1.0.post9"
#: a node that never answers is given up on after this long (30 s by default)
CLOUD_ENV = {"SDC_NODE_CONNECT_TIMEOUT": "5"}


# -- the nodes ---------------------------------------------------------------------------------

class Nodes:
    def __init__(self, cloud: Any, workdir: Path) -> None:
        self.cloud = cloud
        self.workdir = workdir
        self.procs = ProcessGroup(workdir / "sshd-logs")
        self.key_file = workdir / "operator_ed25519"
        self.operator_public = operator_key(self.key_file)
        self.sshd: dict[str, Sshd] = {}

    def start(self, name: str, authorized: list[str]) -> Sshd:
        self.sshd[name] = start_sshd(self.procs, self.workdir, name, authorized)
        return self.sshd[name]

    def prefix(self, name: str) -> Path:
        return self.workdir / f"{name}-root"

    def stop_agents(self) -> None:
        """The agents run detached under their supervisors: stop each supervisor's group."""
        for pidfile in self.workdir.glob("*-root/var/lib/sdc/agent.pid"):
            try:
                os.killpg(int(pidfile.read_text().split()[0]), signal.SIGTERM)
            except (ValueError, ProcessLookupError, PermissionError):
                continue


@pytest.fixture(scope="module")
def nodes(cloud: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """node1 lets in only the operator's key (setup adds the head node's with --key);
    node2 lets in the head node's key from the start."""
    made = Nodes(cloud, tmp_path_factory.mktemp("nodes"))
    head_public = sdc_json(cloud, "server", "ssh-key")["public_key"]
    try:
        made.start("node1", [made.operator_public])
        made.start("node2", [head_public])
        yield made
    except BaseException:
        print(made.procs.tails())
        raise
    finally:
        made.stop_agents()
        made.procs.stop_all()


# -- the sdc command ---------------------------------------------------------------------------

def sdc(cloud: Any, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SDC, *args], env={**os.environ, **cloud.env}, text=True,
                          capture_output=True, timeout=timeout, check=False)


def sdc_json(cloud: Any, *args: str) -> Any:
    """The command's JSON (``--json`` goes before a ``--`` ending the options)."""
    cut = args.index("--") if "--" in args else len(args)
    result = sdc(cloud, *args[:cut], "--json", *args[cut:])
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def setup(nodes: Nodes, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    node = nodes.sshd[name]
    return sdc(nodes.cloud, "server", "setup", "127.0.0.1", "--port", str(node.port),
               "--user", node.user, "--prefix", str(nodes.prefix(name)), "--backend", "sim",
               *extra)


def server_at(cloud: Any, node: Sshd) -> dict[str, Any] | None:
    for server in cloud.api.get("/ops/servers"):
        if server.get("ssh_host") == "127.0.0.1" and server.get("ssh_port") == node.port:
            return dict(server)
    return None


def agent_pid(nodes: Nodes, name: str) -> int:
    """The supervisor's pid: a restart of the agent's service makes a new one."""
    pidfile = nodes.prefix(name) / "var/lib/sdc/agent.pid"
    return int(pidfile.read_text().split()[0])


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def failure_text(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result.stdout + result.stderr


# -- the two nodes come in ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def set_up(nodes: Nodes) -> dict[str, dict[str, Any]]:
    """Both nodes set up at once, as two operators would (node1 with the operator's key,
    node2 with the head node's)."""
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(setup, nodes, "node1", "--accept-new-host-key", "--key",
                            str(nodes.key_file))
        second = pool.submit(setup, nodes, "node2", "--accept-new-host-key", "--hostname",
                             "cn-two")
    for done in (first.result(), second.result()):
        assert done.returncode == 0, done.stdout + done.stderr
    servers = {name: server_at(nodes.cloud, nodes.sshd[name]) for name in ("node1", "node2")}
    assert all(servers.values()), servers
    return servers  # type: ignore[return-value]


def test_setup_installs_an_agent_that_registers_and_is_set_up(
        nodes: Nodes, set_up: dict[str, dict[str, Any]]) -> None:
    assert set_up["node2"]["hostname"] == "cn-two"
    for name, server in set_up.items():
        assert server["setup"] is True and server["status"] == "running", server
        assert server["agent_prefix"] == str(nodes.prefix(name)), server
        assert server["agent_version"] == "0.1.0", server
        prefix = nodes.prefix(name)
        assert (prefix / "opt/sdc/agent/current/bin/sdc").exists()
        # the node's secrets are the node's only
        for secret in ("etc/sdc/agent.env", "etc/sdc/credentials.json"):
            assert (prefix / secret).stat().st_mode & 0o077 == 0, secret
    # the operator's key logged in once, to let the head node's own key in
    authorized = nodes.sshd["node1"].authorized_keys.read_text()
    head_public = sdc_json(nodes.cloud, "server", "ssh-key")["public_key"]
    assert head_public.split()[1] in authorized


def test_the_job_records_each_step_and_no_secret(
        nodes: Nodes, set_up: dict[str, dict[str, Any]]) -> None:
    jobs = [j for j in nodes.cloud.api.get("/ops/jobs", {"limit": 50})
            if j["name"] == "server_setup"]
    assert len(jobs) >= 2
    job = nodes.cloud.api.get(f"/ops/jobs/{jobs[0]['uuid']}")
    assert job["execution"] == "succeeded"
    names = [step["name"] for step in job["chain_results"]]
    assert names == ["prepare_bundle", "inspect", "upload", "install", "configure",
                     "activate", "wait_heartbeat", "mark_setup"], names
    text = json.dumps(job)
    password = re.search(r"redis://:([^@]+)@", nodes.cloud.env["SDC_REDIS_URL"])
    assert password and password.group(1) not in text
    assert nodes.cloud.env["SDC_MESSAGE_KEY"] not in text


def test_a_machine_runs_on_each_node_and_exec_reaches_both(
        nodes: Nodes, set_up: dict[str, dict[str, Any]]) -> None:
    cloud = nodes.cloud
    cloud.seed()
    for server in set_up.values():
        machine = cloud.api.post("/ops/machines", {"owner": "alice", "package": "small",
                                                   "image": "base-64",
                                                   "server_uuid": server["uuid"]})
        job = cloud.wait_job(machine["job_uuid"], timeout=120)
        assert job["execution"] == "succeeded", job
        assert cloud.api.get(f"/ops/machines/{machine['uuid']}")["state"] == "running"
    rows = sdc_json(cloud, "server", "exec", "--servers", "all", "--", "echo", "hello")
    by_server = {row["uuid"]: row for row in rows}
    assert set(by_server) == {s["uuid"] for s in set_up.values()}, rows
    for row in by_server.values():
        assert (row["status"], row["exit_code"], row["stdout"]) == ("ok", 0, "hello"), row


def test_a_second_setup_changes_nothing(nodes: Nodes,
                                        set_up: dict[str, dict[str, Any]]) -> None:
    before = agent_pid(nodes, "node2")
    again = setup(nodes, "node2", "--hostname", "cn-two", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    job = json.loads(again.stdout)
    changed = {e["name"]: e["result"].get("changed") for e in job["chain_results"]
               if isinstance(e["result"], dict) and "changed" in e["result"]}
    assert changed and not any(changed.values()), changed
    assert agent_pid(nodes, "node2") == before
    assert pid_alive(before)
    assert server_at(nodes.cloud, nodes.sshd["node2"])["uuid"] == set_up["node2"]["uuid"]


def test_a_rollback_before_any_upgrade_is_refused_and_changes_nothing(
        nodes: Nodes, set_up: dict[str, dict[str, Any]]) -> None:
    before = agent_pid(nodes, "node2")
    text = failure_text(sdc(nodes.cloud, "server", "rollback-agent",
                            set_up["node2"]["uuid"]))
    assert "NoPreviousRelease" in text or "no previous" in text, text
    assert agent_pid(nodes, "node2") == before


def test_forget_is_refused_while_machines_remain(
        nodes: Nodes, set_up: dict[str, dict[str, Any]]) -> None:
    text = failure_text(sdc(nodes.cloud, "server", "forget", set_up["node1"]["uuid"]))
    assert "machine" in text
    assert server_at(nodes.cloud, nodes.sshd["node1"]) is not None


# -- a new agent version rolls across the fleet ------------------------------------------------

def bumped_wheel(workdir: Path) -> Path:
    """A wheel of this checkout with UPGRADE_VERSION, as a release build would make it."""
    source = workdir / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                             capture_output=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    pyproject = source / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"',
                                                       f'version = "{UPGRADE_VERSION}"', 1))
    out = workdir / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(out), str(source)], check=True, timeout=300)
    (wheel,) = out.glob("sdc-*.whl")
    return wheel


def test_upgrade_agent_rolls_a_new_version_onto_both(
        nodes: Nodes, set_up: dict[str, dict[str, Any]]) -> None:
    wheel = bumped_wheel(nodes.workdir / "upgrade")
    result = sdc(nodes.cloud, "server", "upgrade-agent", "--servers", "all",
                 "--parallel", "2", "--wheel", str(wheel))
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("node1", "node2"):
        server = server_at(nodes.cloud, nodes.sshd[name])
        assert server and server["agent_version"] == UPGRADE_VERSION, server
        current = (nodes.prefix(name) / "opt/sdc/agent/current").resolve()
        assert current.name == UPGRADE_VERSION
    upgrades = [j for j in nodes.cloud.api.get("/ops/jobs", {"limit": 50})
                if j["name"] == "agent_upgrade" and not j["params"].get("rollback")]
    assert len(upgrades) == 2 and all(j["execution"] == "succeeded" for j in upgrades)
    # --parallel 2: the second job started before the first one ended
    first, second = (nodes.cloud.api.get(f"/ops/jobs/{j['uuid']}")
                     for j in sorted(upgrades, key=lambda j: j["created_at"]))
    assert when(second["chain_results"][0]["started_at"]) < when(first["finished_at"])
    job = nodes.cloud.api.get(f"/ops/jobs/{upgrades[0]['uuid']}")
    assert [step["name"] for step in job["chain_results"]] == [
        "prepare_bundle", "inspect", "upload", "install", "activate", "wait_version"]


def test_rollback_agent_goes_back_to_the_release_before(
        nodes: Nodes, set_up: dict[str, dict[str, Any]]) -> None:
    uuid = set_up["node1"]["uuid"]
    result = sdc(nodes.cloud, "server", "rollback-agent", uuid)
    assert result.returncode == 0, result.stdout + result.stderr
    assert nodes.cloud.server(uuid)["agent_version"] == "0.1.0"
    assert (nodes.prefix("node1") / "opt/sdc/agent/current").resolve().name == "0.1.0"
    assert server_at(nodes.cloud, nodes.sshd["node2"])["agent_version"] == UPGRADE_VERSION


# -- what an operator is told when it cannot work ----------------------------------------------

def test_a_changed_host_key_is_refused(nodes: Nodes,
                                       set_up: dict[str, dict[str, Any]]) -> None:
    restart_with_new_host_key(nodes.procs, nodes.sshd["node2"])
    text = failure_text(setup(nodes, "node2"))
    assert "host key" in text.lower() and "changed" in text.lower(), text
    # not even --accept-new-host-key trusts a changed key
    text = failure_text(setup(nodes, "node2", "--accept-new-host-key"))
    assert "changed" in text.lower(), text


def test_a_key_the_node_refuses_is_an_authentication_error(nodes: Nodes) -> None:
    nodes.start("node3", ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC3tkFIKMXR3hCKqoZmDkyMuRuXm6"
                          "wqbM0cuSEmmz5Yy nobody@test"])
    text = failure_text(setup(nodes, "node3", "--accept-new-host-key"))
    assert "refused the head node's key" in text or "authentication" in text.lower(), text
    text = failure_text(setup(nodes, "node3", "--accept-new-host-key", "--key",
                              str(nodes.key_file)))
    assert "authentication" in text.lower() or "refused" in text.lower(), text
    assert server_at(nodes.cloud, nodes.sshd["node3"]) is None
    assert not (nodes.prefix("node3") / "opt").exists()


def test_a_host_that_never_answers_times_out(nodes: Nodes) -> None:
    # It takes the connection (the kernel's backlog) and never says a word, as a node
    # hung in boot would.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        result = sdc(nodes.cloud, "server", "setup", "127.0.0.1", "--port", str(port),
                     "--prefix", str(nodes.workdir / "silent-root"), "--backend", "sim",
                     "--accept-new-host-key", timeout=300)
    text = failure_text(result)
    assert "no answer" in text or "timed out" in text.lower(), text


def test_the_api_refuses_bad_setup_requests(nodes: Nodes) -> None:
    api: OpsClient = nodes.cloud.api
    for body, field in (({"port": 22}, "host"),
                        ({"host": "127.0.0.1", "port": 0}, "port"),
                        ({"host": "127.0.0.1", "backend": "windows"}, "backend")):
        before = len(api.get("/ops/jobs", {"limit": 200}))
        with pytest.raises(Exception) as refused:
            api.post("/ops/servers/setup", body)
        assert field in str(refused.value), refused.value
        assert len(api.get("/ops/jobs", {"limit": 200})) == before


def test_nothing_waits_on_the_agents_after_the_tests(nodes: Nodes) -> None:
    pids = [agent_pid(nodes, name) for name in ("node1", "node2")]
    nodes.stop_agents()
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=30,
               message="the supervised agents to stop")
