"""What a node's agent is configured with: PREFIX/etc/sdc/agent.env (SDC_* settings, the
Redis URL with its password among them), its credentials file and the image store's CA.
A NodeConfig holds secrets: it is made when a step needs it and never recorded."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from headnode.config import HeadnodeSettings
from headnode.imagestore import base_url
from headnode.nodesetup.credentials import canonical_uuid, credentials_for
from headnode.nodesetup.errors import NodeSetupError
from headnode.nodesetup.layout import NodeLayout

#: what a value of agent.env may hold: systemd's EnvironmentFile and our own reader take it
#: as it is, without quotes or escapes to interpret
PLAIN_VALUE = re.compile(r"^[^\s\"'\\]*$")
SETTING_NAME = re.compile(r"^SDC_[A-Z0-9_]+$")


@dataclass(frozen=True)
class NodeConfig:
    server_uuid: str
    env: dict[str, str] = field(repr=False)
    credentials_json: str = field(repr=False)
    ca_pem: bytes | None = field(default=None, repr=False)

    def files(self, layout: NodeLayout) -> dict[str, bytes | None]:
        """Name (as layout.config_files) -> content; None: the file must not be there."""
        return {"agent.env": render_env(self.env),
                "credentials.json": self.credentials_json.encode(),
                "image-store-ca.pem": self.ca_pem}


def node_config(settings: HeadnodeSettings, server_uuid: str, layout: NodeLayout,
                backend: str, pool: str = "", nic_tags: str = "", hostname: str = "",
                extra: dict[str, str] | None = None) -> NodeConfig:
    """The configuration of the agent of ``server_uuid`` installed at ``layout``;
    ``extra``: further SDC_* settings of the agent (tests: a short heartbeat interval)."""
    server_uuid = canonical_uuid(server_uuid)
    ca_pem = _ca_pem(settings)
    env = {
        "SDC_REDIS_URL": settings.resolved_node_redis_url,
        "SDC_SERVER_UUID": server_uuid,
        "SDC_BACKEND": backend,
        "SDC_DATA_DIR": layout.data_dir,
        "SDC_NODE_CREDENTIALS": layout.credentials_file,
        "SDC_IMAGE_STORE_URL": base_url(settings),
        **({"SDC_IMAGE_STORE_CA": layout.ca_file} if ca_pem else {}),
        **({"SDC_POOL": pool} if pool else {}),
        **({"SDC_NIC_TAGS": nic_tags} if nic_tags else {}),
        **({"SDC_HOSTNAME": hostname} if hostname else {}),
        **(extra or {}),
    }
    return NodeConfig(server_uuid, env, credentials_for(settings, server_uuid), ca_pem)


def render_env(env: dict[str, str]) -> bytes:
    """agent.env's text; BadConfig names a setting whose value cannot be written plainly
    (without showing the value: it may be the Redis password)."""
    for key, value in env.items():
        if not SETTING_NAME.match(key):
            raise NodeSetupError("BadConfig", f"{key!r} is not an SDC_* setting name")
        if not PLAIN_VALUE.match(value):
            raise NodeSetupError("BadConfig", f"{key}: a node's setting cannot hold blanks, "
                                 "quotes or backslashes")
    return "".join(f"{key}={value}\n" for key, value in sorted(env.items())).encode()


def _ca_pem(settings: HeadnodeSettings) -> bytes | None:
    path = settings.node_ca_file or settings.ca_file
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise NodeSetupError("BadConfig", f"the image store's CA for nodes: cannot read "
                             f"{path}: {exc.strerror}") from exc
