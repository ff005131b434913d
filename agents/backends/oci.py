"""The OCI runtime config (``config.json``) of one machine's runc bundle.

The machine's limits map onto cgroups: memory limit = RAM, CPU quota from ``cpu_cap``
(percent of one CPU, as on SmartOS: 0 = no cap, 300 = three CPUs) over a 100 ms period,
CPU shares in proportion to the cap, pids limit = ``max_lwps``. The container gets its own
pid, mount, uts and ipc namespaces, and joins the network namespace the node made for the
machine (its NICs already in it) or, without one, gets an empty one of runc's. It holds
CAP_NET_ADMIN over its own namespace only: it may change its addresses, which the node's
filters then drop. ``/etc/resolv.conf`` is the bundle's ``resolv.conf``, mounted read-only
(never written through the machine's root, which could hold a symlink).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CPU_PERIOD_US = 100_000
DEFAULT_SHARES = 1024
#: the init of a machine whose image names none: sleeps, and exits on SIGTERM so a stop is
#: quick (a plain `sleep` as pid 1 of a pid namespace would ignore SIGTERM)
DEFAULT_INIT = ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN",
                 "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_SETGID", "CAP_SETUID",
                 "CAP_SETPCAP", "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_MKNOD",
                 "CAP_NET_ADMIN"]
#: the file in the bundle that the machine sees as /etc/resolv.conf
RESOLV_CONF = "resolv.conf"
#: where the machine sees the directory of its metadata socket (as a SmartOS zone does)
ZONECONTROL = "/.zonecontrol"


def cpu_quota_us(cpu_cap: int) -> int:
    """CFS quota per period for ``cpu_cap`` percent of one CPU; -1 means no cap."""
    return cpu_cap * CPU_PERIOD_US // 100 if cpu_cap > 0 else -1


def cpu_shares(cpu_cap: int) -> int:
    return max(2, cpu_cap * DEFAULT_SHARES // 100) if cpu_cap > 0 else DEFAULT_SHARES


def resources(machine: dict[str, Any]) -> dict[str, Any]:
    cpu: dict[str, Any] = {"shares": cpu_shares(machine["cpu_cap"]), "period": CPU_PERIOD_US}
    if machine["cpu_cap"] > 0:
        cpu["quota"] = cpu_quota_us(machine["cpu_cap"])
    return {
        "devices": [{"allow": False, "access": "rwm"}],
        "memory": {"limit": machine["ram_mb"] * 1024 * 1024},
        "cpu": cpu,
        "pids": {"limit": machine["max_lwps"]},
    }


def resolv_conf(resolvers: list[str]) -> str:
    """The machine's /etc/resolv.conf: one nameserver line per resolver, in order."""
    return "".join(f"nameserver {address}\n" for address in resolvers)


def namespaces(netns: Path | None) -> list[dict[str, str]]:
    network = {"type": "network", **({"path": str(netns)} if netns is not None else {})}
    return [{"type": "pid"}, network, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]


def process_env(init: dict[str, Any] | None, alias: str) -> list[str]:
    """The init's environment: the image's ``env``, after PATH, TERM and HOSTNAME (the
    alias) for those of them it does not set."""
    env = list((init or {}).get("env") or [])
    named = {item.split("=", 1)[0] for item in env}
    defaults = {"PATH": DEFAULT_PATH, "TERM": "xterm", "HOSTNAME": alias}
    return [*(f"{k}={v}" for k, v in defaults.items() if k not in named), *env]


def config(machine: dict[str, Any], rootfs: Path, *, netns: Path | None = None,
           resolv: Path | None = None, zonecontrol: Path | None = None) -> dict[str, Any]:
    """``machine``: the stored machine record (alias, ram_mb, cpu_cap, max_lwps, and
    ``init``, the image's ImageInitSchema dict whose args, env and workdir the machine's
    first process runs with; None: :data:`DEFAULT_INIT`);
    ``netns``: the machine's network namespace (a bind-mounted nsfs file) to join;
    ``resolv``: the file to mount read-only at /etc/resolv.conf;
    ``zonecontrol``: the directory of the machine's metadata socket, mounted read-only at
    /.zonecontrol (a socket on a read-only mount still takes connections)."""
    resolv_mount = ([{"destination": "/etc/resolv.conf", "type": "bind", "source": str(resolv),
                      "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}]
                    if resolv is not None else [])
    zonecontrol_mount = ([{"destination": ZONECONTROL, "type": "bind",
                           "source": str(zonecontrol),
                           "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}]
                         if zonecontrol is not None else [])
    init = machine.get("init")
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(init["args"]) if init else DEFAULT_INIT,
            "env": process_env(init, machine["alias"]),
            "cwd": (init or {}).get("workdir") or "/",
            "capabilities": {key: _CAPABILITIES for key in
                             ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": machine["alias"],
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            *resolv_mount,
            *zonecontrol_mount,
        ],
        "linux": {
            "resources": resources(machine),
            "namespaces": namespaces(netns),
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }
