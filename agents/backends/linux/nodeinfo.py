"""What a Linux node says about itself in sysinfo: memory, boot time, hardware name."""

from __future__ import annotations

from pathlib import Path

from agents.backends.base import BackendError

AGENT_VERSION = "sdc-agent-linux/0.1"
#: what a Linux node runs (sysinfo "SDC Runs"): containers of Linux userlands; no zones of
#: illumos images, no hardware VMs
RUNS_OSES = ("linux", "other")
RUNS_TYPES = ("lx-dataset", "docker", "zone-dataset", "other")


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
