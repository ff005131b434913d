"""What a Linux node says about itself in sysinfo: memory, boot time, hardware name."""

from __future__ import annotations

from pathlib import Path

from agents.backends.base import BackendError
from agents.version import agent_version

#: the installed sdc distribution's version (a rolling upgrade waits for it)
AGENT_VERSION = agent_version()
#: what a Linux node runs (sysinfo "SDC Runs"): containers of Linux userlands; no zones of
#: illumos images, no hardware VMs
RUNS_OSES = ("linux", "other")
RUNS_TYPES = ("lx-dataset", "docker", "zone-dataset", "other")
#: image file formats it installs, each with its image types (sysinfo runs.format): both
#: storage drivers unpack root filesystem tarballs; neither receives ZFS send streams (a
#: SmartOS image's dataset keeps its root under root/, not where a container's is)
RUNS_FORMATS = {"tar": list(RUNS_TYPES)}


def meminfo_mb(field: str) -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name == field:
                return int(rest.split()[0]) // 1024
    raise BackendError("NodeInfo", f"/proc/meminfo has no {field}")


def boot_time() -> float | None:
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("btime "):
                return float(line.split()[1])
    return None


def system_type() -> str:
    try:
        product = Path("/sys/class/dmi/id/product_name").read_text().strip()
    except OSError:
        product = ""
    return product or "Linux"
