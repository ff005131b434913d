"""A tenant's Debian machine on one real Linux node: POST -> SSH answering, beside its floor.

The head node runs as in production on this machine (PostgreSQL, Redis, the API under
gunicorn, the workflow worker, beat) with one `sdc agent run --backend linux` on a btrfs pool
on a loop device, its node network in a namespace this script makes. The Debian image
(`sdc image build-debian`, cached per machine) is imported through the API and fetched once by
the node. Then N provisions of it with one NIC, one at a time, each timed from the start of its
POST until the machine's sshd sends its banner to a TCP connection on its address: the
machine booted its own init, which read its metadata, wrote the keys and started sshd.

The floor, measured in the same run and interleaved with the provisions (this machine is shared
and noisy), is what the kernel and the image must do anyway: a btrfs snapshot of the image,
one NIC by hand and `runc run --detach` of the same init (bench/linux_floor.py), timed until
the same banner. Prints both and their ratio (target: p50 <= 2x the floor).

    .venv/bin/python bench/linux_ssh.py [--provisions 10]     (as root)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.backends.linux import netlines  # noqa: E402
from bench.common import percentile  # noqa: E402
from bench.linux_floor import FLOOR_BRIDGE, image_final_path, measure_floor  # noqa: E402
from bench.linux_node import SDC, destroy, job_row, linux_bench_node, ms  # noqa: E402
from headnode.cli.client import OpsClient  # noqa: E402
from tests.support import netns  # noqa: E402
from tests.support.btrfs import missing_host  # noqa: E402
from tests.support.debian_image import debian_image, missing_builder  # noqa: E402
from tests.support.httpsig_client import Signer  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402

PACKAGE: dict[str, Any] = {"name": "deb-256m", "memory": 256, "disk": 1024}
NETWORK: dict[str, Any] = {"name": "benchnet", "subnet": "10.77.0.0/16", "gateway": "10.77.0.1",
                           "nic_tag": "external", "owner": "bench"}
#: the node namespace's own address on a machine network, from which the banner is awaited
WATCHER = {"benchnet": "10.77.255.254/16", "floor": "10.250.255.254/16"}
#: awaits an SSH banner on ADDRESS:22, retrying every 5 ms; prints the unix time it came
BANNER_WATCH = """
import socket, sys, time
while True:
    try:
        with socket.create_connection((sys.argv[1], 22), timeout=1) as s:
            s.settimeout(30)
            if s.recv(64).startswith(b"SSH-"):
                print(time.time(), flush=True)
                break
    except OSError:
        time.sleep(0.005)
"""


def watch_banner(node_netns: Path, address: str) -> subprocess.Popen[str]:
    """A watcher in the node's namespace, started before the machine exists."""
    return subprocess.Popen(["nsenter", f"--net={node_netns}", sys.executable, "-c",
                             BANNER_WATCH, address], stdout=subprocess.PIPE, text=True)


def banner_time(watcher: subprocess.Popen[str], timeout: float = 120) -> float:
    try:
        out, _ = watcher.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        watcher.kill()
        raise SystemExit("no SSH banner within 120 s") from None
    return float(out.strip())


def give_address(node_netns: Path, bridge: str, address: str) -> None:
    netns.run_in(node_netns, ["ip", "addr", "replace", address, "dev", bridge])


def provision_to_ssh(api: OpsClient, engine: Any, node_netns: Path, image: str, i: int
                     ) -> tuple[float, str]:
    """Seconds from the start of the POST to the machine's SSH banner; the job's uuid. The
    POST's answer names the address (allocated before it answers); the watcher starts then,
    long before the machine boots."""
    started = time.time()
    machine = api.post("/ops/machines", {"owner": "bench", "package": PACKAGE["name"],
                                         "image": image, "alias": f"deb-{i}",
                                         "networks": [NETWORK["name"]]})
    watcher = watch_banner(node_netns, machine["primary_ip"])
    answered = banner_time(watcher)
    wait_until(lambda: job_row(engine, machine["job_uuid"]), timeout=120,
               message=f"provision {i} to finish")
    return answered - started, str(machine["job_uuid"])


def floor_to_ssh(pool: Path, final: Path, runc_root: Path, node_netns: Path,
                 init: dict[str, Any]) -> float:
    """One floor round (snapshot + NIC by hand + runc run of the image's init) until the
    banner; its first NIC gets 10.250.0.10 (bench/linux_floor.py)."""
    watcher = watch_banner(node_netns, "10.250.0.10")
    rounds: list[float] = []

    def after_run() -> None:
        give_address(node_netns, FLOOR_BRIDGE, WATCHER["floor"])
        rounds.append(banner_time(watcher))

    started = time.time()
    measure_floor(pool, final, runc_root, rounds=1, ram_mb=PACKAGE["memory"],
                  disk_mb=PACKAGE["disk"], node_netns=node_netns, init=init,
                  after_run=after_run)
    return rounds[0] - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--provisions", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args()
    missing = missing_host() or netns.missing_host() or missing_builder()
    if missing:
        print(f"linux_ssh: cannot run here: {missing}", file=sys.stderr)
        return 2
    built = debian_image()
    with linux_bench_node("ssh", 6 << 30, PACKAGE, NETWORK, args.keep) as node:
        api, engine, pool, node_netns = node.api, node.engine, node.pool, node.node_netns
        floor_runc = pool.workdir / "floor-runc"
        # CloudAPI's rule: a machine that needs keys gets the account's
        api.post("/ops/accounts/bench/keys", {"key": Signer("bench").public_line,
                                              "name": "bench"})
        imported = subprocess.run([SDC, "--json", "image", "import", str(built.manifest_path),
                                   str(built.file_path)], capture_output=True, text=True,
                                  env={**node.env, "SDC_API_URL": api.base_url}, check=True)
        image = built.manifest["uuid"]
        assert image in imported.stdout

        # The first provision also imports the image into the pool and makes the bridge:
        # shown, not counted. The node's namespace then gets an address on the bridge.
        first_job = api.post("/ops/machines", {"owner": "bench", "package": PACKAGE["name"],
                                               "image": image, "alias": "deb-0",
                                               "networks": [NETWORK["name"]]})["job_uuid"]
        started = time.time()
        wait_until(lambda: job_row(engine, first_job), timeout=600, message="first provision")
        first = time.time() - started
        give_address(node_netns, netlines.bridge_name(netlines.vni("external", 0)),
                     WATCHER["benchnet"])
        destroy(api, engine, first_job)
        final = image_final_path(pool.mount, image)
        init = built.manifest["init"]
        runs: dict[str, list[float]] = {"ssh": [], "floor": []}
        for i in range(1, args.provisions + 1):
            runs["floor"].append(floor_to_ssh(pool.mount, final, floor_runc, node_netns, init))
            took, job_uuid = provision_to_ssh(api, engine, node_netns, image, i)
            runs["ssh"].append(took)
            destroy(api, engine, job_uuid)

        p50 = {kind: statistics.median(values) for kind, values in runs.items()}
        p99 = {kind: percentile(values, 0.99) for kind, values in runs.items()}
        print(f"one Linux node (btrfs loop pool, runc, node network in its own namespace), "
              f"image {built.manifest['name']} {built.manifest['version']} "
              f"({built.file_path.stat().st_size >> 20} MiB packed), package "
              f"{PACKAGE['memory']} MiB / {PACKAGE['disk']} MiB, one NIC; provisions one at a "
              "time, each destroyed before the next")
        print(f"first provision (with the image import): {ms(first)} to the job's end")
        print(f"POST -> SSH banner, over {len(runs['ssh'])}: p50 {ms(p50['ssh'])}, "
              f"p99 {ms(p99['ssh'])}, max {ms(max(runs['ssh']))}")
        print(f"floor (snapshot + qgroup limit + NIC by hand + runc run of the image's init, "
              f"until its sshd's banner): p50 {ms(p50['floor'])}, p99 {ms(p99['floor'])}")
        ratio = p50["ssh"] / p50["floor"]
        print(f"ratio p50/floor p50: {ratio:.2f}x (target <= 2x); "
              f"p99/floor p99: {p99['ssh'] / p99['floor']:.2f}x")
        return 0 if ratio <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
