"""Where the agent lives on a node, under PREFIX ("/" on a real node; a directory of its own
for each node when nodes share a host, as in the tests). Paths are the node's, not ours."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from headnode.nodesetup.errors import NodeSetupError

UNIT_DIR = PurePosixPath("/etc/systemd/system")
#: written last into a release: a release without it is a failed or interrupted install
COMPLETE_MARKER = ".sdc-release-complete"


@dataclass(frozen=True)
class NodeLayout:
    prefix: str = "/"

    def __post_init__(self) -> None:
        path = PurePosixPath(self.prefix)
        if not path.is_absolute() or ".." in path.parts:
            raise NodeSetupError("BadPrefix", f"{self.prefix!r}: the node's prefix must be "
                                 "an absolute path without '..'")
        object.__setattr__(self, "prefix", str(path))

    def _under(self, relative: str) -> str:
        return str(PurePosixPath(self.prefix) / relative)

    @property
    def agent_dir(self) -> str:
        return self._under("opt/sdc/agent")

    @property
    def releases_dir(self) -> str:
        return f"{self.agent_dir}/releases"

    def release(self, version: str) -> str:
        return f"{self.releases_dir}/{version}"

    def marker(self, version: str) -> str:
        return f"{self.release(version)}/{COMPLETE_MARKER}"

    def wheels(self, version: str) -> str:
        return f"{self.agent_dir}/wheels/{version}"

    @property
    def current(self) -> str:
        return f"{self.agent_dir}/current"

    @property
    def previous(self) -> str:
        return f"{self.agent_dir}/previous"

    @property
    def sdc_command(self) -> str:
        """The agent's command in the release that runs (through ``current``)."""
        return f"{self.current}/bin/sdc"

    @property
    def etc_dir(self) -> str:
        return self._under("etc/sdc")

    @property
    def env_file(self) -> str:
        return f"{self.etc_dir}/agent.env"

    @property
    def credentials_file(self) -> str:
        return f"{self.etc_dir}/credentials.json"

    @property
    def ca_file(self) -> str:
        return f"{self.etc_dir}/image-store-ca.pem"

    @property
    def config_files(self) -> dict[str, str]:
        """Name (as job records show it) -> path of each file write_config manages."""
        return {"agent.env": self.env_file, "credentials.json": self.credentials_file,
                "image-store-ca.pem": self.ca_file}

    def backup(self, name: str) -> str:
        """Where write_config keeps the config file ``name`` it replaced, for restore."""
        return f"{self.etc_dir}/.{name}.before"

    @property
    def owned(self) -> dict[str, str]:
        """What setup may create, by name: restore removes what was not there before."""
        return {"agent_dir": self.agent_dir, "etc_dir": self.etc_dir,
                "data_dir": self.data_dir, "log_file": self.log_file}

    @property
    def parents(self) -> dict[str, str]:
        """The directories above ``owned`` that setup may create, deepest first: restore
        removes those that were not there before if they are empty."""
        return {relative: self._under(relative)
                for relative in ("opt/sdc", "opt", "etc", "var/lib", "var/log", "var")}

    @property
    def data_dir(self) -> str:
        return self._under("var/lib/sdc")

    @property
    def pidfile(self) -> str:
        return f"{self.data_dir}/agent.pid"

    @property
    def active_stamp(self) -> str:
        """What the running agent was started with (release and config digests)."""
        return f"{self.data_dir}/agent.active"

    @property
    def log_file(self) -> str:
        return self._under("var/log/sdc-agent.log")

    @property
    def unit_name(self) -> str:
        # Nodes sharing one host each need their own unit.
        if self.prefix == "/":
            return "sdc-agent.service"
        digest = hashlib.sha256(self.prefix.encode()).hexdigest()[:12]
        return f"sdc-agent-{digest}.service"

    @property
    def unit_path(self) -> str:
        return str(UNIT_DIR / self.unit_name)
