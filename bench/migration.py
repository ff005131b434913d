"""Migrating a machine with 1 GiB of data between two Linux nodes on this machine: the full
sync's throughput beside `btrfs send | btrfs receive` of the same subvolume by hand, and the
switch's downtime.

The whole head node runs as in production (a private PostgreSQL and Redis, the API under
gunicorn, the workflow worker, beat) with two `sdc agent run --backend linux`, each on its
own btrfs pool on a loop device. One machine (busybox, no NIC) gets 1 GiB of random data
written inside. Then, per round (the machine goes back and forth):

- the floor: a read-only snapshot of the machine's root by hand and `btrfs send SNAP |
  btrfs receive DIR` from the machine's pool into the other node's, timed from the start
  of `send` to `receive` exiting (then both removed);
- the migration through the operator API: begin, a full sync (timed from its POST to its
  job's end: what an operator waits for), 64 MiB more written inside, an incremental sync,
  the switch (its downtime as the head node measures it, stop sent -> running on the
  target, and as runc shows it, polled on both nodes: not running on the source -> running
  on the target), finalize.

Prints both transfer rates (the same stream's bytes over each one's time; target: the full
sync >= 80 % of the floor's rate), the downtime beside its target (<= 2 s plus the last
increment's transfer) and where the switch's time goes.

    .venv/bin/python bench/migration.py [--rounds 3] [--data-mb 1024]     (as root)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import private_stack  # noqa: E402
from bench.linux_node import ms  # noqa: E402
from tests.support.btrfs import missing_host  # noqa: E402
from tests.support.linux_cloud import LinuxCloud, LinuxNode  # noqa: E402

MIB = 1 << 20
PACKAGE: dict[str, Any] = {"name": "lx-mig-bench", "memory": 256, "disk": 2048}
#: each pool holds the machine (1 GiB), a received copy and the floor's (freed after)
POOL_SIZE = 6 << 30
INCREMENT_MB = 64
JOB_TIMEOUT = 1800
FLOOR_DIR = "bench-floor"


@dataclass
class Round:
    direction: str
    floor_s: float
    stream_bytes: int = 0
    full_sync_s: float = 0.0
    full_send_s: float | None = None
    increment_s: float = 0.0
    switch_s: float = 0.0
    downtime_s: float | None = None
    runc_downtime_s: float | None = None
    last_send_s: float | None = None
    switch_steps: dict[str, float] = field(default_factory=dict)
    increment_steps: dict[str, float] = field(default_factory=dict)


# -- the floor: btrfs by hand ------------------------------------------------------------------


def btrfs_argv(*args: str) -> list[str]:
    return ["btrfs", *args]


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=600)


def send_receive_by_hand(source: LinuxNode, machine_uuid: str, target: LinuxNode) -> float:
    """Seconds of `btrfs send | btrfs receive` of a read-only snapshot of the machine's root
    into the target's pool (the snapshot is made before the clock starts); everything made
    is removed after."""
    snapshots = source.pool.mount / ".sdc" / FLOOR_DIR
    received = target.pool.mount / ".sdc" / FLOOR_DIR
    snapshots.mkdir(parents=True, exist_ok=True)
    received.mkdir(parents=True, exist_ok=True)
    snapshot = snapshots / machine_uuid
    run(btrfs_argv("subvolume", "snapshot", "-r", str(source.pool.mount / "zones" / machine_uuid),
                   str(snapshot)))
    try:
        started = time.perf_counter()
        send = subprocess.Popen(btrfs_argv("send", "-q", str(snapshot)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert send.stdout is not None
        receive = subprocess.run(btrfs_argv("receive", str(received)), stdin=send.stdout,
                                 capture_output=True, timeout=600, check=False)
        send.stdout.close()
        sent = send.wait(timeout=600)
        took = time.perf_counter() - started
        if sent != 0 or receive.returncode != 0:
            raise SystemExit(f"btrfs send | receive failed: {receive.stderr!r}")
        return took
    finally:
        for made in (snapshot, received / machine_uuid):
            if made.exists():
                run(btrfs_argv("subvolume", "delete", "--commit-after", str(made)))
        # the next transfer meets a pool whose cleaner has finished
        for pool in (source.pool.mount, target.pool.mount):
            run(btrfs_argv("subvolume", "sync", str(pool)))


# -- the migration through the API ---------------------------------------------------------------


def _when(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def timed_action(cloud: LinuxCloud, machine_uuid: str, action: str) -> tuple[float, dict[str, Any]]:
    """Seconds from the POST to the job's end (its finished_at); the job."""
    started = time.time()
    answer = cloud.api.post(f"/ops/machines/{machine_uuid}/migrate", {"action": action})
    job = cloud.wait_job(answer["job_uuid"], timeout=JOB_TIMEOUT)
    if job["execution"] != "succeeded":
        raise SystemExit(f"migrate {action} failed: {job['error']}")
    return _when(job["finished_at"]) - started, job


def step_seconds(job: dict[str, Any]) -> dict[str, float]:
    return {entry["name"]: _when(entry["finished_at"]) - _when(entry["started_at"])
            for entry in job["chain_results"] if entry.get("finished_at")}


def sync_reply(job: dict[str, Any], step: str) -> dict[str, Any]:
    """What the job recorded of a send step: the stream's bytes and seconds."""
    for entry in job["chain_results"]:
        result = entry.get("result")
        if entry["name"] == step and isinstance(result, dict):
            return dict(result.get("sync") or result)
    return {}


class RuncWatch:
    """Polls runc on both nodes during a switch: when the machine stopped running on the
    source and when it runs on the target."""

    def __init__(self, cloud: LinuxCloud, machine_uuid: str, source: LinuxNode,
                 target: LinuxNode) -> None:
        self.cloud, self.uuid, self.source, self.target = cloud, machine_uuid, source, target
        self.stopped_at: float | None = None
        self.running_at: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _running(self, node: LinuxNode) -> bool:
        state = self.cloud.runc_state(self.uuid, node)
        return state is not None and state.get("status") == "running"

    def _poll(self) -> None:
        while not self._done.is_set() and self.running_at is None:
            now = time.time()
            if self.stopped_at is None and not self._running(self.source):
                self.stopped_at = now
            if self.stopped_at is not None and self._running(self.target):
                self.running_at = time.time()
            time.sleep(0.005)

    def __enter__(self) -> RuncWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()

    def downtime(self) -> float | None:
        if self.stopped_at is None or self.running_at is None:
            return None
        return self.running_at - self.stopped_at


def migrate_round(cloud: LinuxCloud, machine_uuid: str, source: LinuxNode,
                  target: LinuxNode, floor_s: float) -> Round:
    result = Round(f"{source.name} -> {target.name}", floor_s)
    timed_action(cloud, machine_uuid, "begin")
    result.full_sync_s, job = timed_action(cloud, machine_uuid, "sync")
    reply = sync_reply(job, "send")
    result.full_send_s = reply.get("seconds")
    migration = cloud.api.get(f"/ops/migrations/{machine_uuid}")
    result.stream_bytes = int(reply.get("bytes") or migration["sent_bytes"])
    cloud.inside(machine_uuid, "dd", "if=/dev/urandom", f"of=/root/more-{time.time_ns()}",
                 "bs=1M", f"count={INCREMENT_MB}")
    result.increment_s, job = timed_action(cloud, machine_uuid, "sync")
    result.increment_steps = step_seconds(job)
    cloud.inside(machine_uuid, "sync")
    with RuncWatch(cloud, machine_uuid, source, target) as watch:
        result.switch_s, job = timed_action(cloud, machine_uuid, "switch")
    result.runc_downtime_s = watch.downtime()
    migration = cloud.api.get(f"/ops/migrations/{machine_uuid}")
    if migration.get("downtime_ms") is not None:
        result.downtime_s = migration["downtime_ms"] / 1000
    result.last_send_s = sync_reply(job, "final_send").get("seconds")
    result.switch_steps = step_seconds(job)
    timed_action(cloud, machine_uuid, "finalize")
    return result


# -- the report ------------------------------------------------------------------------------------


def rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / MIB / seconds:.0f} MiB/s"


def report(rounds: list[Round], data_mb: int) -> bool:
    print(f"two Linux nodes on this machine (btrfs loop pools, runc), one busybox machine "
          f"with {data_mb} MiB of random data; {len(rounds)} rounds, each: the floor by hand "
          f"then a migration (begin, full sync, +{INCREMENT_MB} MiB, sync, switch, finalize)")
    for i, r in enumerate(rounds, 1):
        print(f"round {i} ({r.direction}): stream {r.stream_bytes / MIB:.0f} MiB; "
              f"floor (btrfs send | receive) {ms(r.floor_s)} = {rate(r.stream_bytes, r.floor_s)}; "
              f"full sync POST -> done {ms(r.full_sync_s)} = "
              f"{rate(r.stream_bytes, r.full_sync_s)} ({r.floor_s / r.full_sync_s:.0%} of the "
              "floor's rate)"
              + (f", its send step {ms(r.full_send_s)}" if r.full_send_s else ""))
        print(f"  incremental sync of {INCREMENT_MB} MiB: {ms(r.increment_s)}; switch job "
              f"{ms(r.switch_s)}, downtime (head node) "
              + (ms(r.downtime_s) if r.downtime_s is not None else "not reported")
              + ", (runc, polled) "
              + (ms(r.runc_downtime_s) if r.runc_downtime_s is not None else "not seen")
              + ", last increment's send "
              + (ms(r.last_send_s) if r.last_send_s is not None else "not reported"))
        for what, steps in (("incremental sync", r.increment_steps),
                            ("switch", r.switch_steps)):
            print(f"  {what} steps: " + ", ".join(f"{name} {ms(s)}"
                                                 for name, s in steps.items()))
    share = statistics.median(r.floor_s / r.full_sync_s for r in rounds)
    print(f"full sync throughput, median over rounds: {share:.0%} of btrfs send | receive by "
          "hand (target >= 80%)")
    ok = share >= 0.8
    downtimes = [(r.downtime_s, r.last_send_s or 0.0) for r in rounds
                 if r.downtime_s is not None]
    if downtimes:
        worst = max(d - last for d, last in downtimes)
        print(f"switch downtime minus the last increment's send, worst over rounds: "
              f"{ms(worst)} (target <= 2000 ms)")
        ok = ok and worst <= 2.0
    else:
        print("switch downtime: not reported by the head node")
        ok = False
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-mb", type=int, default=1024)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--floor-only", action="store_true",
                        help="only the by-hand floor, no migration")
    args = parser.parse_args()
    missing = missing_host()
    if missing:
        print(f"migration: cannot run here: {missing}", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="sdc-bench-migration-"))
    with private_stack("migration") as stack:
        assert stack.redis is not None
        cloud = LinuxCloud(workdir, stack.database_url, stack.redis.url)
        try:
            cloud.start_headnode()
            nodes = [cloud.add_node(f"mig{i}", pool_size=POOL_SIZE) for i in range(2)]
            cloud.seed([PACKAGE])
            machine = cloud.provision("big", PACKAGE["name"], server_uuid=nodes[0].server,
                                      networks=[])
            cloud.inside(machine["uuid"], "dd", "if=/dev/urandom", "of=/root/data", "bs=1M",
                         f"count={args.data_mb}")
            cloud.inside(machine["uuid"], "sync")
            rounds = []
            for _ in range(args.rounds):
                source = cloud.node_of(machine["uuid"])
                target = next(n for n in nodes if n is not source)
                floor_s = send_receive_by_hand(source, machine["uuid"], target)
                if args.floor_only:
                    print(f"floor {source.name} -> {target.name}: {ms(floor_s)}")
                    continue
                rounds.append(migrate_round(cloud, machine["uuid"], source, target, floor_s))
            return 0 if args.floor_only or report(rounds, args.data_mb) else 1
        except BaseException:
            print(cloud.procs.tails(20), file=sys.stderr)
            raise
        finally:
            cloud.stop()
            if args.keep:
                print(f"logs kept in {workdir / 'logs'}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
