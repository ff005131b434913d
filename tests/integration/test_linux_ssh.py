"""A tenant's machine from a real Debian image, end to end: the head node's processes and one
real Linux node (`sdc agent run --backend linux`, btrfs pool, its node network in a namespace
this test makes), the Debian image built with mmdebstrap (`sdc image build-debian`, cached
per machine) and imported, and Triton's own CLI as the tenant.

The tenant sits in a namespace of its own, plugged into the node's bridge of the machines'
network with an address of that network: `triton` runs in the host's namespace (it talks to
the API on loopback) and the `ssh` it spawns runs in the tenant's (a wrapper first on PATH),
so `triton ssh` reaches the machine's primaryIp as a tenant on that network would. Nothing is
made in the host's own network namespace.

What is asserted is what the machine says over SSH, what `mdata-get` says inside it, and what
the API says after the guest's own `mdata-put`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import netns
from tests.support.btrfs import missing_host
from tests.support.debian_image import missing_builder

MISSING = missing_host() or netns.missing_host() or missing_builder()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

# Imported after the skip decision: these drive btrfs, runc and namespaces on the host.
from agents.backends.linux import netlines  # noqa: E402
from headnode.imagebuild import build_busybox_image  # noqa: E402
from tests.support.debian_image import debian_image  # noqa: E402
from tests.support.httpsig_client import Signer  # noqa: E402
from tests.support.linux_cloud import LinuxCloud, cloud_with_namespaces  # noqa: E402
from tests.support.triton import home_with_key, triton_runner  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402

PACKAGE: dict[str, Any] = {"name": "lx-deb", "memory": 256, "disk": 512}
LAN = {"name": "lan0", "subnet": "10.71.0.0/24", "gateway": "10.71.0.1",
       "provision_start_ip": "10.71.0.10", "provision_end_ip": "10.71.0.99",
       "nic_tag": "external", "vlan_id": 0, "public": True}
#: the tenant's own address on lan0, outside the provisioning range
TENANT_ADDRESS = "10.71.0.2/24"
USER_SCRIPT = "#!/bin/sh\nuname -n > /var/tmp/user-script-ran\n"
#: ssh finds ~ through the password database (root's), not $HOME: the wrapper names this
#: file, and it names the tenant's key
SSH_CONFIG = ("Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
              "  LogLevel ERROR\n  ConnectTimeout 5\n  BatchMode yes\n  IdentitiesOnly yes\n"
              "  IdentityFile {key}\n")


class SshCloud(LinuxCloud):
    #: the tenant's network namespace
    tenant_space: Path


@dataclass
class Tenant:
    run: Any  # triton_runner
    home: Path
    netns: Path

    def json(self, *args: str) -> Any:
        """The last JSON line a command printed (``create -w -j`` prints one per state)."""
        return json.loads(self.run(*args).strip().splitlines()[-1])

    def ssh(self, inst: str, *command: str) -> str:
        """`triton ssh INST COMMAND`, retried while sshd is not up yet; its stdout."""
        def answered() -> list[str] | None:  # a list: an empty output is an answer too
            out = self.run("ssh", inst, *command, ok=False)
            return None if "Connection refused" in out or "timed out" in out else [out]

        answer = wait_until(answered, timeout=60, interval=1, message=f"{inst} to answer ssh")
        assert answer is not None
        return answer[0]


@pytest.fixture(scope="module")
def cloud(postgres_server: Any, redis_server: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshCloud]:
    workdir = tmp_path_factory.mktemp("linux-ssh")
    spaces = netns.workdir("ssh")
    with cloud_with_namespaces(postgres_server, redis_server, workdir, SshCloud, spaces) as c:
        c.add_node("deb0", netns.create(spaces / "node0"))
        c.seed([PACKAGE])
        c.import_image(debian_image())
        c.api.post("/ops/networks", LAN)
        c.tenant_space = netns.create(spaces / "tenant")
        yield c


def ssh_wrapper(bin_dir: Path, space: Path, config: Path) -> Path:
    """An `ssh` that runs the real one inside the tenant's namespace, with her config."""
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec nsenter --net={space} /usr/bin/ssh -F {config} "$@"\n')
    wrapper.chmod(0o755)
    return bin_dir


@pytest.fixture(scope="module")
def tenant(cloud: SshCloud, triton_bin: str,
           tmp_path_factory: pytest.TempPathFactory) -> Tenant:
    """alice with a key of her own registered, her `triton`, and her place on lan0."""
    signer = Signer("alice")
    cloud.api.post("/ops/accounts/alice/keys", {"key": signer.public_line, "name": "cli"})
    base = tmp_path_factory.mktemp("alice")
    (base / "home").mkdir()
    home = home_with_key(base / "home", signer)
    config = home / ".ssh" / "config"
    config.write_text(SSH_CONFIG.format(key=home / ".ssh" / "id_rsa"))
    bin_dir = ssh_wrapper(base / "bin", cloud.tenant_space, config)
    run = triton_runner(triton_bin, home, "alice", signer.fingerprint,
                        f"http://{cloud.env['SDC_API_BIND']}",
                        extra_env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    return Tenant(run, home, cloud.tenant_space)


def plug_tenant(cloud: SshCloud, tenant: Tenant) -> None:
    """A veth from the tenant's namespace to the node's bridge of lan0 (made with the first
    machine on it), with the tenant's address; once."""
    if netns.run_in(tenant.netns, ["ip", "link", "show", "t0"], check=False).returncode == 0:
        return
    node = cloud.nodes[0]
    assert node.netns is not None
    bridge = netlines.bridge_name(netlines.vni("external", 0))
    netns.run_in(tenant.netns, ["ip", "link", "add", "t0", "type", "veth", "peer", "name",
                                "tenant0", "netns", str(node.netns)])
    netns.run_in(node.netns, ["ip", "link", "set", "tenant0", "master", bridge, "up"])
    netns.run_in(tenant.netns, ["ip", "addr", "add", TENANT_ADDRESS, "dev", "t0"])
    netns.run_in(tenant.netns, ["ip", "link", "set", "t0", "up"])


@pytest.fixture(scope="module")
def deb(cloud: SshCloud, tenant: Tenant, tmp_path_factory: pytest.TempPathFactory
        ) -> dict[str, Any]:
    """alice's Debian machine, made with `triton create` and a user-script."""
    script = tmp_path_factory.mktemp("script") / "user-script.sh"
    script.write_text(USER_SCRIPT)
    started = time.monotonic()
    created = tenant.json("create", "-j", "-w", "-n", "deb1", "--script", str(script),
                          "-N", "lan0", "debian-12", PACKAGE["name"])
    print(f"\ntriton create -w of the Debian machine: {time.monotonic() - started:.1f} s")
    plug_tenant(cloud, tenant)
    return dict(created)


def test_triton_ssh_reaches_the_machine_as_the_images_default_user(
        cloud: SshCloud, tenant: Tenant, deb: dict[str, Any]) -> None:
    inst = tenant.json("inst", "get", "-j", "deb1")
    assert inst["state"] == "running" and inst["brand"] == "lx"
    started = time.monotonic()
    uname = tenant.ssh("deb1", "uname", "-a")
    print(f"first ssh answer after create: {time.monotonic() - started:.1f} s")
    assert uname.startswith("Linux ")
    assert tenant.ssh("deb1", "whoami").strip() == "debian"  # the image's default_user
    assert tenant.ssh("deb1", "hostname").strip() == "deb1"
    assert f"inet {inst['primaryIp']}/24" in tenant.ssh("deb1", "ip", "-4", "-o", "addr")
    ran = wait_until(lambda: tenant.run("ssh", "deb1", "cat", "/var/tmp/user-script-ran",
                                        ok=False).strip() == "deb1",
                     timeout=30, interval=1, message="the user-script to have run")
    assert ran


def test_metadata_set_through_the_api_is_read_inside_and_the_guests_put_comes_back(
        cloud: SshCloud, tenant: Tenant, deb: dict[str, Any]) -> None:
    tenant.run("inst", "metadata", "set", "deb1", "color=blue")
    started = time.monotonic()
    wait_until(lambda: tenant.ssh("deb1", "mdata-get", "color").strip() == "blue",
               timeout=5, interval=0.2, message="mdata-get color to say blue")
    print(f"metadata set -> seen inside: {time.monotonic() - started:.1f} s")
    assert "color" in tenant.ssh("deb1", "mdata-list").split()

    tenant.ssh("deb1", "mdata-put", "from-guest", "hello")
    wait_until(lambda: tenant.run("inst", "metadata", "get", "deb1", "from-guest",
                                  ok=False).strip() == "hello",
               timeout=10, interval=0.3, message="the guest's put to show in the API")


def test_a_key_added_to_the_account_is_authorized_after_a_reboot(
        cloud: SshCloud, tenant: Tenant, deb: dict[str, Any]) -> None:
    extra = Signer("alice")
    cloud.api.post("/ops/accounts/alice/keys", {"key": extra.public_line, "name": "laptop"})
    tenant.run("inst", "reboot", "-w", "deb1")
    keys = tenant.ssh("deb1", "cat", ".ssh/authorized_keys")
    assert extra.public_line.split()[1] in keys


def test_each_machines_metadata_socket_answers_for_that_machine_only(
        cloud: SshCloud, tenant: Tenant, deb: dict[str, Any]) -> None:
    other = cloud.provision("deb2", PACKAGE["name"], image="debian-12", networks=["lan0"])
    for uuid in (deb["id"], other["uuid"]):
        assert cloud.inside(uuid, "/usr/sbin/mdata-get", "sdc:uuid").strip() == uuid


def test_a_machine_whose_init_exits_is_reported_stopped(cloud: SshCloud) -> None:
    built = build_busybox_image(cloud.workdir / "exits", name="exits-at-once")
    manifest = {**built.manifest, "init": {"kind": "application",
                                           "args": ["/bin/sh", "-c", "exit 0"]}}
    built.manifest_path.write_text(json.dumps(manifest))
    cloud.import_image(built)
    machine = cloud.api.post("/ops/machines", {"owner": "alice", "package": PACKAGE["name"],
                                               "image": "exits-at-once", "alias": "brief"})
    cloud.wait_job(machine["job_uuid"])
    wait_until(lambda: cloud.api.get(f"/ops/machines/{machine['uuid']}")["state"] == "stopped",
               timeout=30, interval=0.5, message="the machine whose init exited to be stopped")
