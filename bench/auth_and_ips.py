"""What HTTP Signature authentication and IP allocation cost, on a private PostgreSQL and Redis.

1. ``authenticate()`` per request for each key type (account and key lookup in PostgreSQL,
   signature check, replay SET NX in Redis), p50/p99 over ``--requests`` signed requests, and
   the signature check alone beside it.
2. IP allocation: ``--threads`` threads each allocate in their own transactions (as
   concurrent provisions do) until ``--leases`` addresses of one /16 are taken; prints
   allocations/s, lost races (retries after a unique-constraint conflict), and the time of
   one allocation on an empty network and on one with ``--leases`` addresses in use.

    .venv/bin/python bench/auth_and_ips.py [--requests 300] [--threads 8] [--leases 2000]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, private_stack  # noqa: E402
from headnode.auth import httpsig  # noqa: E402
from headnode.config import get_settings  # noqa: E402
from headnode.services import accounts, keys, networks  # noqa: E402
from headnode.services.context import ServiceContext  # noqa: E402
from headnode.store.db import engine_for  # noqa: E402
from headnode.store.models import Image, Machine, Package  # noqa: E402
from sdccommon.sshkeys import parse_public_key  # noqa: E402
from tests.unit.headnode.auth.conftest import private_key, public_line, signed_headers  # noqa: E402

KINDS = ("rsa", "ecdsa-p256", "ed25519")


def bench_auth(ctx: ServiceContext, requests: int) -> None:
    print(f"authenticate(): {requests} requests per key type, (request-target) date signed")
    for kind in KINDS:
        login = f"u-{kind}"
        account = accounts.create_account(ctx, login, f"{login}@example.com")
        key = private_key(kind)
        row = keys.create_key(ctx, account.uuid, "k", public_line(key))
        parsed = parse_public_key(row.key)
        full, verify_only = [], []
        for i in range(requests):
            target = f"/{login}/machines?offset={i}"
            headers = signed_headers(key, kind, f"/{login}/keys/{row.fingerprint_md5}", "GET",
                                     target, date=formatdate(usegmt=True))
            start = time.perf_counter()
            httpsig.authenticate(ctx, "GET", target, headers)
            full.append(time.perf_counter() - start)
            params = httpsig.parse_authorization(headers["Authorization"])
            text = httpsig.signing_string("GET", target, httpsig.lower_headers(headers),
                                          params.headers)
            start = time.perf_counter()
            httpsig.verify_signature(parsed, params.algorithm, text, params.signature)
            verify_only.append(time.perf_counter() - start)
        print(f"  {kind:11} full p50 {percentile(full, .5) * 1e3:6.2f} ms  p99 "
              f"{percentile(full, .99) * 1e3:6.2f} ms   signature check alone p50 "
              f"{percentile(verify_only, .5) * 1e3:6.2f} ms")


def machines(ctx: ServiceContext, owner_uuid: str, count: int) -> list[str]:
    with ctx.transaction() as session:
        package, image = Package(name="p", memory=1, disk=1), Image(name="i")
        session.add_all([package, image])
        session.flush()
        rows = [Machine(alias=f"m{i}", owner_uuid=owner_uuid, package_uuid=package.uuid,
                        image_uuid=image.uuid, ram_mb=1, disk_mb=1) for i in range(count)]
        session.add_all(rows)
    return [m.uuid for m in rows]


def allocate_one(ctx: ServiceContext, machine_uuid: str, owner_uuid: str) -> str:
    with ctx.transaction() as session:
        machine = session.get(Machine, machine_uuid)
        assert machine is not None
        big = networks.requested_networks(session, owner_uuid, ["big"])
        return networks.attach_nics(session, machine, big, created_here=False)[0].ip


def bench_ips(ctx: ServiceContext, threads: int, leases: int) -> None:
    owner = accounts.create_account(ctx, "ips", "ips@example.com")
    networks.create_network(ctx, {"name": "big", "subnet": "10.64.0.0/16"})
    todo = machines(ctx, owner.uuid, leases + 2)
    lost = [0]
    engine = engine_for(ctx.settings.resolved_database_url)

    @event.listens_for(engine, "handle_error")
    def _count(context: Any) -> None:
        if "uq_nics" in str(context.original_exception):
            lost[0] += 1

    first = time.perf_counter()
    allocate_one(ctx, todo[0], owner.uuid)
    empty = time.perf_counter() - first
    got: list[str] = []
    lock = threading.Lock()

    def work(batch: list[str]) -> None:
        for machine_uuid in batch:
            ip = allocate_one(ctx, machine_uuid, owner.uuid)
            with lock:
                got.append(ip)

    batch = todo[1:leases]
    workers = [threading.Thread(target=work, args=(batch[i::threads],)) for i in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    took = time.perf_counter() - start
    last = time.perf_counter()
    allocate_one(ctx, todo[-1], owner.uuid)
    full = time.perf_counter() - last
    assert len(set(got)) == len(got), "an address was handed out twice"
    print(f"IP allocation: {len(got)} addresses by {threads} threads in {took:.2f} s = "
          f"{len(got) / took:.0f}/s, {lost[0]} lost races retried, no duplicate")
    print(f"  one allocation: {empty * 1e3:.2f} ms on an empty /16, {full * 1e3:.2f} ms with "
          f"{leases} addresses in use")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--leases", type=int, default=2000)
    args = parser.parse_args()
    with private_stack("auth") as stack:
        assert stack.redis is not None
        ctx = ServiceContext(get_settings(database_url=stack.database_url,
                                          redis_url=stack.redis.url,
                                          data_dir=stack.workdir / "data"))
        bench_auth(ctx, args.requests)
        bench_ips(ctx, args.threads, args.leases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
