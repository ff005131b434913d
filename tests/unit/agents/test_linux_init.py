"""A Linux machine runs its image's init (args, env, workdir), a stop sends that init its stop
signal and waits its stop timeout, and a machine whose init exits by itself is stopped, its
container, namespace, NICs and metadata socket cleaned up; on real runc machines of the
busybox image.

Each init below writes what it sees into its own root, which the test reads from the pool.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from agents.backends import oci
from agents.backends.host import ip
from agents.backends.linux import LinuxBackend
from agents.backends.linux.netlines import host_veth
from schemas.nics import NicSpecSchema
from tests.support import netns
from tests.support.agent_images import FileServer
from tests.support.btrfs import missing_host
from tests.support.wait import wait_until
from tests.unit.agents.conftest import served_image, spec_factory

pytestmark = [
    pytest.mark.skipif(missing_host() is not None, reason=str(missing_host())),
    pytest.mark.skipif(netns.missing_host() is not None, reason=str(netns.missing_host())),
]
SpecFactory = Callable[..., dict[str, Any]]
#: sleeps; pid 1 of a pid namespace without a handler for a signal ignores it
IGNORES_SIGNALS = ["/bin/sh", "-c", "sleep infinity & wait"]


@pytest.fixture
def spec(busybox_image: dict[str, Any]) -> SpecFactory:
    return spec_factory(busybox_image["uuid"], alias="init", ram_mb=128, disk_mb=256)


def init(args: list[str], **fields: Any) -> dict[str, Any]:
    return {"args": args, **fields}


def root_file(node: LinuxBackend, uuid: str, name: str) -> str:
    """A file of the machine's root filesystem, read from the node."""
    return (node.storage.machine_root(uuid) / name).read_text()


def state_of(node: LinuxBackend, uuid: str) -> str:
    return str(node.machine_load(uuid)["state"])


def a_nic() -> dict[str, Any]:
    middle = ":".join(f"{b:02x}" for b in os.urandom(3))
    loaded: dict[str, Any] = NicSpecSchema().load({
        "mac": f"90:b8:d0:{middle}", "interface": "net0", "nic_tag": "external",
        "ips": ["10.77.0.5/24"], "primary": True})
    return loaded


def timed(action: Callable[[], Any]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


# -- what runs ------------------------------------------------------------------------------


def test_without_an_init_the_machine_runs_the_default(node: LinuxBackend,
                                                      spec: SpecFactory) -> None:
    machine = node.machine_create(spec(init=None))
    uuid_ = machine["uuid"]
    assert machine["state"] == "running"
    assert node.records.get(uuid_)["init"] is None
    config = json.loads((node.records.bundle(uuid_) / "config.json").read_text())
    assert config["process"]["args"] == oci.DEFAULT_INIT
    assert config["process"]["cwd"] == "/"
    assert sorted(config["process"]["env"]) == sorted([
        f"PATH={oci.DEFAULT_PATH}", "TERM=xterm", "HOSTNAME=init"])
    # the default init leaves at SIGTERM at once, well before the node's 5 s
    assert timed(lambda: node.machine_stop(uuid_)) < 2.0
    assert state_of(node, uuid_) == "stopped"


def test_an_init_runs_with_its_args_env_and_workdir(node: LinuxBackend,
                                                    spec: SpecFactory) -> None:
    script = ('pwd > /boot-cwd; echo "$0 $1" > /boot-args; cat /proc/1/environ > /boot-env; '
              "trap 'exit 0' TERM; sleep infinity & wait")
    machine = node.machine_create(spec(alias="app1", init=init(
        ["/bin/sh", "-c", script, "first", "second"],
        env=["PATH=/bin", "GREETING=hello world", "EMPTY="], workdir="/tmp")))
    uuid_ = machine["uuid"]
    assert machine["state"] == "running"
    wait_until(lambda: root_file(node, uuid_, "boot-env"), message="the init's env file")
    assert root_file(node, uuid_, "boot-cwd") == "/tmp\n"
    assert root_file(node, uuid_, "boot-args") == "first second\n"
    env = dict(item.split("=", 1) for item in root_file(node, uuid_, "boot-env").split("\0")
               if item)
    # the image's PATH wins; TERM and HOSTNAME, which it does not set, are the node's
    assert {k: env[k] for k in ("PATH", "GREETING", "EMPTY", "TERM", "HOSTNAME")} == {
        "PATH": "/bin", "GREETING": "hello world", "EMPTY": "", "TERM": "xterm",
        "HOSTNAME": "app1"}
    # the spec's init is the machine's, kept for its next boots
    assert node.records.get(uuid_)["init"]["args"][:2] == ["/bin/sh", "-c"]
    (node.storage.machine_root(uuid_) / "boot-args").unlink()
    node.machine_reboot(uuid_)
    wait_until(lambda: root_file(node, uuid_, "boot-args"), message="the init ran again")


def test_a_workdir_the_image_lacks_is_made(node: LinuxBackend, spec: SpecFactory) -> None:
    machine = node.machine_create(spec(init=init(
        ["/bin/sh", "-c", "pwd > /boot-cwd; trap 'exit 0' TERM; sleep infinity & wait"],
        workdir="/srv/app")))
    wait_until(lambda: root_file(node, machine["uuid"], "boot-cwd"), message="the cwd file")
    assert root_file(node, machine["uuid"], "boot-cwd") == "/srv/app\n"


# -- stopping -------------------------------------------------------------------------------


@pytest.mark.parametrize("stop_signal,trapped", [("SIGPWR", "PWR"), ("SIGRTMIN+3", "37")])
def test_a_stop_sends_the_inits_stop_signal(node: LinuxBackend, spec: SpecFactory,
                                            stop_signal: str, trapped: str) -> None:
    # the init leaves on its own signal only: SIGTERM would be ignored for 30 s
    script = f"trap 'echo {trapped} > /stopped-by; exit 0' {trapped}; sleep infinity & wait"
    machine = node.machine_create(spec(init=init(["/bin/sh", "-c", script],
                                                 stop_signal=stop_signal, stop_timeout=30)))
    uuid_ = machine["uuid"]
    assert timed(lambda: node.machine_stop(uuid_)) < 3.0
    assert root_file(node, uuid_, "stopped-by") == f"{trapped}\n"
    assert state_of(node, uuid_) == "stopped"


def test_an_init_that_ignores_its_signal_is_killed_after_its_timeout(
    node: LinuxBackend, spec: SpecFactory
) -> None:
    # the machine's own 1 s, not the node's 5 s (conftest's make_linux)
    machine = node.machine_create(spec(init=init(IGNORES_SIGNALS, stop_timeout=1)))
    uuid_ = machine["uuid"]
    took = timed(lambda: node.machine_stop(uuid_))
    assert 1.0 <= took < 3.0, took
    assert state_of(node, uuid_) == "stopped"
    node.machine_start(uuid_)
    took = timed(lambda: node.machine_reboot(uuid_))
    assert 1.0 <= took < 3.0, took
    assert state_of(node, uuid_) == "running"


def test_without_an_init_a_stop_waits_the_nodes_timeout(node: LinuxBackend,
                                                        spec: SpecFactory) -> None:
    """A record without init (none in the spec, or written by an older agent) stops with
    SIGTERM and the node's stop_timeout: here the running process ignores SIGTERM and its
    record says no init (the bundle is rewritten only at the next boot)."""
    machine = node.machine_create(spec(init=init(IGNORES_SIGNALS)))
    uuid_ = machine["uuid"]
    node.records.save({**node.records.get(uuid_), "init": None})
    node.runtime.stop_timeout = 1.5
    took = timed(lambda: node.machine_stop(uuid_))
    assert 1.5 <= took < 3.5, took


# -- an init that exits ---------------------------------------------------------------------


def test_a_machine_whose_init_exits_is_stopped_and_cleaned_up(node: LinuxBackend,
                                                              spec: SpecFactory) -> None:
    nic = a_nic()
    machine = node.machine_create(spec(nics=[nic], init=init(["/bin/sh", "-c", "exit 0"])))
    uuid_ = machine["uuid"]
    wait_until(lambda: state_of(node, uuid_) == "stopped", timeout=5,
               message="the machine to be stopped")
    loaded = node.machine_load(uuid_)
    assert loaded["boot_time"] is None
    listed = {m["uuid"]: m for m in node.list_machines()}
    assert listed[uuid_]["state"] == "stopped"
    # until the agent's next status check, what the boot made is still there
    assert ip.is_netns(node.network.machine_netns(uuid_))
    status = node.status()
    assert {m["uuid"]: m["state"] for m in status["machines"]}[uuid_] == "stopped"
    assert_cleaned_up(node, uuid_, nic)
    assert status["leftovers"] == []
    # and it starts again (and exits again) as often as one likes, leaving nothing
    for _ in range(3):
        assert node.machine_start(uuid_)["uuid"] == uuid_
        wait_until(lambda: state_of(node, uuid_) == "stopped", timeout=5,
                   message="the machine to be stopped again")
        node.status()
        assert_cleaned_up(node, uuid_, nic)


def test_a_start_cleans_up_after_an_exited_init_no_status_saw(node: LinuxBackend,
                                                              spec: SpecFactory) -> None:
    nic = a_nic()
    script = "test -e /again || { touch /again; exit 3; }; trap 'exit 0' TERM; sleep 999 & wait"
    machine = node.machine_create(spec(nics=[nic], init=init(["/bin/sh", "-c", script])))
    uuid_ = machine["uuid"]
    wait_until(lambda: state_of(node, uuid_) == "stopped", timeout=5,
               message="the first boot's init to exit")
    started = node.machine_start(uuid_)  # no status in between
    assert started["state"] == "running"
    assert node.runtime.is_running(uuid_)
    links = [link["ifname"] for link in ip.links(node.network.node_netns)]
    assert links.count(host_veth(nic["mac"])) == 1
    assert node.metadata.socket_path(uuid_).exists()
    node.machine_stop(uuid_)
    assert_cleaned_up(node, uuid_, nic)


def test_a_stop_of_a_machine_whose_init_exited_cleans_up(node: LinuxBackend,
                                                         spec: SpecFactory) -> None:
    nic = a_nic()
    machine = node.machine_create(spec(nics=[nic], init=init(["/bin/sh", "-c", "exit 0"])))
    uuid_ = machine["uuid"]
    wait_until(lambda: state_of(node, uuid_) == "stopped", timeout=5, message="stopped")
    assert node.machine_stop(uuid_)["state"] == "stopped"
    assert_cleaned_up(node, uuid_, nic)


def assert_cleaned_up(node: LinuxBackend, uuid_: str, nic: dict[str, Any]) -> None:
    assert node.runtime.state(uuid_) is None
    assert not ip.is_netns(node.network.machine_netns(uuid_))
    assert host_veth(nic["mac"]) not in [link["ifname"]
                                         for link in ip.links(node.network.node_netns)]
    assert not node.metadata.socket_path(uuid_).exists()


def test_the_image_manifest_keeps_the_init(node: LinuxBackend,
                                           image_server: FileServer) -> None:
    image = {**served_image(image_server, "busybox.tar.gz"),
             "init": {"kind": "application", "args": ["/bin/sh"], "env": [], "workdir": "/",
                      "stop_signal": "SIGTERM", "stop_timeout": 30},
             "tags": {"default_user": "root"}}
    node.image_ensure_present(image)
    manifest = json.loads((node.images.manifests_dir / f"{image['uuid']}.json").read_text())
    assert manifest["init"] == image["init"]
    assert manifest["tags"] == {"default_user": "root"}
