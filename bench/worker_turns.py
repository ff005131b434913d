"""What one provision costs the workflow worker: the engine's two turns, in process.

A private PostgreSQL, 100 servers with room; machines are created through the machines
service (not measured), then each job is driven as the worker drives it: ``run_step``
(validate, then the ensure_image + create_machine batch is sent) and ``on_agent_reply``
with the node's answer to the batch (both steps recorded, commit_usage, the job ends).
Celery's own cost per message is not in these figures (bench/provision_throughput.py has the
whole). Prints CPU ms and SQL statements per turn.

    .venv/bin/python bench/worker_turns.py [--servers 100] [--provisions 300] [--profile N]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import StatementCounter, populate, private_stack  # noqa: E402
from headnode.config import get_settings  # noqa: E402
from headnode.services import machines  # noqa: E402
from headnode.services.context import ServiceContext  # noqa: E402
from headnode.store.db import engine_for  # noqa: E402
from tests.support.jobqueue import RecordingJobQueue  # noqa: E402
from workflows.engine import Engine, Transport  # noqa: E402
from workflows.registry import load_all  # noqa: E402

CALLER = {"type": "operator"}


class AgentCalls(Transport):
    """Keeps the agent calls the engine sends; a provision sends nothing else."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []

    def send_step(self, job_uuid: str, attempt: int) -> None:
        raise AssertionError(f"a provision that succeeds sends no step message ({job_uuid})")

    def send_agent(self, server_uuid: str, op: str, params: dict[str, Any],
                   reply: dict[str, Any] | None) -> None:
        self.calls.append((server_uuid, op, params, reply))

    def send_raw(self, queue: str, task: str, args: list[Any]) -> None:
        raise AssertionError(f"unexpected {task}")


def node_answer(server_uuid: str, params: dict[str, Any]) -> dict[str, Any]:
    """What a sim node answers to the batch: the image is there, the machine runs."""
    now = time.time()
    image, spec = (op["params"] for op in params["ops"])
    outcomes = [
        {"server_uuid": server_uuid, "ok": True, "error": None, "started_at": now,
         "finished_at": now, "result": {"image": {"uuid": image["image"]["uuid"]}}},
        {"server_uuid": server_uuid, "ok": True, "error": None, "started_at": now,
         "finished_at": now, "result": {"machine": {"uuid": spec["uuid"], "state": "running"}}},
    ]
    return {"server_uuid": server_uuid, "ok": True, "error": None, "started_at": now,
            "finished_at": now, "result": {"outcomes": outcomes}}


def create(ctx: ServiceContext, i: int) -> str:
    made = machines.create_machine(ctx, {"owner": "bench", "package": "g1-512m",
                                         "image": "base-64", "alias": f"bench-{i}"}, CALLER)
    return str(made["job_uuid"])


def drive(engine: Engine, calls: AgentCalls, job_uuid: str,
          cpu: dict[str, float], profiler: cProfile.Profile | None = None) -> None:
    turns = (lambda: engine.run_step(job_uuid, 1),
             lambda: engine.on_agent_reply(calls.calls[-1][3] or {},
                                           node_answer(calls.calls[-1][0], calls.calls[-1][2])))
    for name, turn in zip(("run_step", "reply"), turns, strict=True):
        if profiler:
            profiler.enable()
        before = time.process_time()
        turn()
        cpu[name] += time.process_time() - before
        if profiler:
            profiler.disable()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--provisions", type=int, default=300)
    parser.add_argument("--show-sql", action="store_true",
                        help="print the statements of one provision")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="then profile N more provisions and print the top functions")
    args = parser.parse_args()
    load_all()
    with private_stack("worker", redis=False) as stack:
        settings = get_settings(database_url=stack.database_url,
                                data_dir=stack.workdir / "data", provision_backlog_limit=0)
        ctx = ServiceContext(settings, jobs=RecordingJobQueue())
        populate(ctx, args.servers)
        calls = AgentCalls()
        engine = Engine(settings, ctx.sessions, calls)
        counter = StatementCounter(engine_for(settings.resolved_database_url))
        jobs = [create(ctx, i) for i in range(args.provisions + 21 + args.profile)]
        cpu = {"run_step": 0.0, "reply": 0.0}
        for job_uuid in jobs[:20]:  # warm up: imports, caches, pooled connections
            drive(engine, calls, job_uuid, cpu)
        cpu = {"run_step": 0.0, "reply": 0.0}
        statements = counter.count
        measured = jobs[20:20 + args.provisions]
        for job_uuid in measured:
            drive(engine, calls, job_uuid, cpu)
        n = len(measured)
        print(f"{args.servers} servers, {n} provisions driven through the engine in process")
        print("  CPU per provision: " + ", ".join(f"{k} {v / n * 1e3:.2f} ms"
                                                  for k, v in cpu.items())
              + f"; both {sum(cpu.values()) / n * 1e3:.2f} ms")
        print(f"  SQL statements per provision: {(counter.count - statements) / n:.1f}")
        if args.show_sql:
            counter.last.clear()
            drive(engine, calls, jobs[-1], cpu)
            print("  the statements of one more provision:")
            for statement in counter.last:
                print("    " + " ".join(statement.split())[:150])
        if args.profile:
            profiler = cProfile.Profile(time.process_time)
            for job_uuid in jobs[20 + args.provisions:-1]:
                drive(engine, calls, job_uuid, cpu, profiler)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
    return 0


if __name__ == "__main__":
    sys.exit(main())
