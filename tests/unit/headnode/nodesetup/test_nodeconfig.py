"""A node's configuration: agent.env from the head node's settings, the node's own key only
(the one derivation `sdc server credentials` uses too), and no secret in a repr or an
error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headnode.config import HeadnodeSettings
from headnode.nodesetup.credentials import credentials_for
from headnode.nodesetup.errors import NodeSetupError
from headnode.nodesetup.layout import NodeLayout
from headnode.nodesetup.nodeconfig import node_config, render_env
from headnode.services.node_credentials import write_credentials

SERVER = "5E1F0C7A-6D2B-4B8E-9A3C-1F2E3D4C5B6A"
PASSWORD = "s3cr3t-redis-password"


@pytest.fixture
def head(tmp_path: Path) -> HeadnodeSettings:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n...\n")
    return HeadnodeSettings(data_dir=tmp_path / "head", message_key="test-key",
                            redis_url="redis://127.0.0.1:6379/0",
                            node_redis_url=f"redis://:{PASSWORD}@10.0.0.2:6379/0",
                            image_base_url="https://10.0.0.2:8443/", ca_file=str(ca))


def test_agent_env_of_a_node(head: HeadnodeSettings) -> None:
    layout = NodeLayout("/srv/n1")
    config = node_config(head, SERVER, layout, "linux", pool="/var/lib/sdc/pool",
                         nic_tags="admin:eth0", extra={"SDC_HEARTBEAT_INTERVAL": "1"})
    env = config.files(layout)["agent.env"]
    assert env is not None
    assert env.decode().splitlines() == [
        "SDC_BACKEND=linux",
        "SDC_DATA_DIR=/srv/n1/var/lib/sdc",
        "SDC_HEARTBEAT_INTERVAL=1",
        "SDC_IMAGE_STORE_CA=/srv/n1/etc/sdc/image-store-ca.pem",
        "SDC_IMAGE_STORE_URL=https://10.0.0.2:8443",
        "SDC_NIC_TAGS=admin:eth0",
        "SDC_NODE_CREDENTIALS=/srv/n1/etc/sdc/credentials.json",
        "SDC_POOL=/var/lib/sdc/pool",
        f"SDC_REDIS_URL=redis://:{PASSWORD}@10.0.0.2:6379/0",
        f"SDC_SERVER_UUID={SERVER.lower()}",
    ]
    assert config.files(layout)["image-store-ca.pem"] == b"-----BEGIN CERTIFICATE-----\n...\n"
    assert PASSWORD not in repr(config)


def test_the_node_gets_its_own_key_as_sdc_server_credentials_writes_it(
        head: HeadnodeSettings, tmp_path: Path) -> None:
    mine = json.loads(credentials_for(head, SERVER))
    write_credentials(head.resolved_message_key(), [SERVER], tmp_path / "issued.json")
    assert mine == json.loads((tmp_path / "issued.json").read_text())
    assert list(mine["nodes"]) == [SERVER.lower()]


def test_a_value_agent_env_cannot_hold_is_named_not_shown() -> None:
    with pytest.raises(NodeSetupError) as caught:
        render_env({"SDC_REDIS_URL": f"redis://:{PASSWORD} x@h/0"})
    assert caught.value.code == "BadConfig" and "SDC_REDIS_URL" in caught.value.message
    assert PASSWORD not in str(caught.value)
    with pytest.raises(NodeSetupError, match="not an SDC_"):
        render_env({"PATH": "/bin"})
