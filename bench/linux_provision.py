"""Provisioning onto one real Linux node: POST -> running, beside the floor of the same work.

The whole head node runs as in production on this machine (PostgreSQL, Redis, the API under
gunicorn, the workflow worker, beat) with one `sdc agent run --backend linux` on a btrfs pool
on a loop device. The busybox image (`sdc image build-busybox`) is imported through the API
and fetched once by the node. Then N provisions, one at a time, each timed from the start of
its POST to its job's end (the machine is running: runc reports it so).

Each round provisions twice: once with one NIC (on a network of the node's nic tag: a veth
pair on the tag's bridge, the machine's own namespace, its anti-spoofing chain) and once with
none. The node's network lives in a namespace this script makes (`SDC_NODE_NETNS`): nothing is
plumbed in the host's own.

The floor is what the kernel must do anyway for one machine, measured in the same run and
interleaved with the provisions (this machine is shared and noisy): a btrfs snapshot of the
image plus `runc run --detach` of the same bundle the agent writes, and for the NIC round one
NIC made by hand (bench/linux_floor.py). Prints both, their ratios (target: the provision with
a NIC at p50 <= 3x its floor, which includes the NIC), the NIC's own cost beside its floor's,
and where a provision's time goes.

    .venv/bin/python bench/linux_provision.py [--provisions 20]     (as root)
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile  # noqa: E402
from bench.linux_floor import image_final_path, measure_floor  # noqa: E402
from bench.linux_node import destroy, job_row, linux_bench_node, ms  # noqa: E402
from headnode.cli.client import OpsClient  # noqa: E402
from headnode.imagebuild import build_busybox_image  # noqa: E402
from tests.support import netns  # noqa: E402
from tests.support.btrfs import missing_host  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402

PACKAGE: dict[str, Any] = {"name": "lx-256m", "memory": 256, "disk": 512}
#: owned by the bench account, not public: a provision gets a NIC only when it names it
NETWORK: dict[str, Any] = {"name": "benchnet", "subnet": "10.77.0.0/16", "gateway": "10.77.0.1",
                           "nic_tag": "external", "owner": "bench"}
POLL = 0.005




def import_busybox(api: OpsClient, out: Path) -> str:
    built = build_busybox_image(out)
    created = api.post("/ops/images", built.manifest)
    with open(built.file_path, "rb") as fh:
        resp = api.session.put(api.url(f"/ops/images/{created['uuid']}/file"), data=fh,
                               headers={"Content-Type": "application/octet-stream"},
                               timeout=120)
    resp.raise_for_status()
    assert hashlib.sha256(built.file_path.read_bytes()).hexdigest() == \
        built.manifest["files"][0]["sha256"]
    return str(created["uuid"])




def provision_once(api: OpsClient, engine: Any, image_uuid: str, i: int,
                   networks: list[str]) -> tuple[float, str]:
    """Seconds from the start of the POST to the job's end (machine running); job uuid."""
    started = time.time()
    machine = api.post("/ops/machines", {"owner": "bench", "package": PACKAGE["name"],
                                         "image": image_uuid, "alias": f"lx-{i}",
                                         "networks": networks})
    row: tuple[str, float] | None = wait_until(lambda: job_row(engine, machine["job_uuid"]),
                                               timeout=300, interval=POLL,
                                               message=f"provision {i} to finish")
    assert row is not None
    execution, finished = row
    if execution != "succeeded":
        job = api.get(f"/ops/jobs/{machine['job_uuid']}")
        raise SystemExit(f"provision {i} failed: {job['error']}")
    return finished - started, str(machine["job_uuid"])




def step_durations(api: OpsClient, job_uuids: list[str]) -> dict[str, float]:
    """Median seconds per step over the jobs, plus the queue wait before the first step."""
    per: dict[str, list[float]] = {}
    for job_uuid in job_uuids:
        job = api.get(f"/ops/jobs/{job_uuid}")
        created = datetime.fromisoformat(job["created_at"])
        first = datetime.fromisoformat(job["chain_results"][0]["started_at"])
        per.setdefault("(queued before validate)", []).append(
            (first - created).total_seconds())
        for entry in job["chain_results"]:
            took = (datetime.fromisoformat(entry["finished_at"])
                    - datetime.fromisoformat(entry["started_at"])).total_seconds()
            per.setdefault(entry["name"], []).append(took)
    return {name: statistics.median(values) for name, values in per.items()}




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--provisions", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args()
    missing = missing_host() or netns.missing_host()
    if missing:
        print(f"linux_provision: cannot run here: {missing}", file=sys.stderr)
        return 2

    with linux_bench_node("linux", 4 << 30, PACKAGE, NETWORK, args.keep) as node:
        api, engine, pool, node_netns = node.api, node.engine, node.pool, node.node_netns
        floor_runc = pool.workdir / "floor-runc"
        image_uuid = import_busybox(api, node.workdir / "image")

        # The first provision also imports the image into the pool: shown, not counted.
        first, first_job = provision_once(api, engine, image_uuid, 0, [NETWORK["name"]])
        destroy(api, engine, first_job)
        final = image_final_path(pool.mount, image_uuid)
        floor_args = {"ram_mb": PACKAGE["memory"], "disk_mb": PACKAGE["disk"]}
        measure_floor(pool.mount, final, floor_runc, rounds=2, node_netns=node_netns,
                      **floor_args)  # warm caches
        runs: dict[str, list[float]] = {"nic": [], "plain": [], "floor_nic": [],
                                        "floor_plain": []}
        jobs = []
        for i in range(1, args.provisions + 1):
            runs["floor_nic"] += measure_floor(pool.mount, final, floor_runc, rounds=1,
                                               node_netns=node_netns, **floor_args)
            runs["floor_plain"] += measure_floor(pool.mount, final, floor_runc, rounds=1,
                                                 **floor_args)
            for kind, networks in (("nic", [NETWORK["name"]]), ("plain", [])):
                took, job_uuid = provision_once(api, engine, image_uuid, i, networks)
                runs[kind].append(took)
                if kind == "nic":
                    jobs.append(job_uuid)
                destroy(api, engine, job_uuid)

        p50 = {kind: statistics.median(values) for kind, values in runs.items()}
        p99 = {kind: percentile(values, 0.99) for kind, values in runs.items()}
        print(f"one Linux node (btrfs loop pool, runc, node network in its own namespace), "
              f"busybox image, package {PACKAGE['memory']} MiB / {PACKAGE['disk']} MiB; "
              "provisions one at a time, each destroyed before the next")
        print(f"first provision (with the image import): {ms(first)}")
        for kind, label in (("nic", "with one NIC"), ("plain", "without a NIC")):
            print(f"POST -> running {label}, over {len(runs[kind])}: p50 {ms(p50[kind])}, "
                  f"p99 {ms(p99[kind])}, max {ms(max(runs[kind]))}")
        print(f"floor with one NIC by hand (snapshot + qgroup limit + netns + veth + address "
              f"+ nft chain + runc run --detach): p50 {ms(p50['floor_nic'])}, "
              f"p99 {ms(p99['floor_nic'])}")
        print(f"floor without a NIC: p50 {ms(p50['floor_plain'])}, "
              f"p99 {ms(p99['floor_plain'])}")
        ratio = p50["nic"] / p50["floor_nic"]
        print(f"ratio p50/floor p50 with the NIC: {ratio:.2f}x (target <= 3x); "
              f"p99/floor p99: {p99['nic'] / p99['floor_nic']:.2f}x")
        print(f"the NIC's own cost (p50 with minus without): provision "
              f"{ms(p50['nic'] - p50['plain'])}, floor {ms(p50['floor_nic'] - p50['floor_plain'])}")
        print("median per step (with the NIC): " + ", ".join(
            f"{name} {ms(v)}" for name, v in step_durations(api, jobs).items()))
        return 0 if ratio <= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
