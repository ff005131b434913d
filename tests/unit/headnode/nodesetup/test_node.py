"""node.inspect against a real sshd (the node is this machine, its PREFIX a directory of the
test's) and node.check naming everything a node lacks."""

from __future__ import annotations

import pytest

from headnode.nodesetup.errors import NodeSetupError
from headnode.nodesetup.layout import NodeLayout
from headnode.nodesetup.node import NodeState, check, inspect, problems
from headnode.ssh.client import Connection


def test_inspect_an_empty_node(conn: Connection, layout: NodeLayout) -> None:
    state = inspect(conn, layout, "linux")
    assert state.os == "Linux" and state.is_root and state.venv
    assert state.python is not None and state.python.startswith("3.")
    assert state.tools == {"btrfs": True, "ip": True, "nft": True, "runc": True}
    assert state.init == "supervised"  # this machine's PID 1 is not systemd
    assert state.installed_version is None and state.releases == []
    assert state.config == dict.fromkeys(layout.config_files)
    assert state.existing == dict.fromkeys([*layout.owned, *layout.parents], False)
    assert not state.agent_running and state.server_uuid is None
    assert state.free_mb > 0
    check(state, "linux")
    assert NodeState.from_dict(state.to_dict()) == state


def test_check_names_every_missing_thing_with_its_package(conn: Connection,
                                                          layout: NodeLayout) -> None:
    state = inspect(conn, layout, "linux", pool=f"{layout.prefix}/no-pool")
    state.tools["runc"] = False
    state.venv = False
    with pytest.raises(NodeSetupError) as caught:
        check(state, "linux")
    assert caught.value.code == "NodeNotReady"
    assert caught.value.message == (
        "python3's venv missing (apt install python3-venv); runc missing (apt install runc); "
        f"the pool {layout.prefix}/no-pool missing (a btrfs file system mounted there; for "
        f"a test node: sdc agent pool create FILE --mount {layout.prefix}/no-pool)")


def test_a_smartos_node_is_checked_for_its_own_tools(conn: Connection,
                                                     layout: NodeLayout) -> None:
    state = inspect(conn, layout, "smartos")
    assert state.tools == {"vmadm": False, "zfs": False}
    found = problems(state, "smartos", python="2.7")
    assert found == [
        "the smartos backend runs on SunOS, this node runs Linux",
        f"python 2.7 (the agent's wheels are built for it; the node has {state.python})",
        "vmadm missing (part of the SmartOS platform image)",
        "zfs missing (part of the SmartOS platform image)",
    ]


def test_check_refuses_a_node_logged_into_as_another_user() -> None:
    state = NodeState(prefix="/", os="Linux", is_root=False, python=None)
    assert problems(state, "sim") == ["not root: log in as root (--user root)",
                                      "python3 missing (apt install python3)"]
