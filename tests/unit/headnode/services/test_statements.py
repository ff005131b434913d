"""Statements of the hot paths are built once per thread, never shared between threads: a
statement object compiled by two threads at once can mix up its memoized parts (seen as a
rare NoSuchColumnError on the first creates of a fresh API process under load)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from headnode.services import capacity, conflicts, fleet
from headnode.services import machines as svc
from headnode.services.statements import per_thread_cache
from headnode.store.db import engine_for
from tests.unit.headnode.services.conftest import (
    make_account,
    make_image,
    make_package,
    make_server,
)

BUILDERS: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
    (svc._lookup_query, (False, False, False, True, False, True)),
    (capacity._hold_statement, (False,)),
    (fleet._servers_and_counts, (False,)),
    (conflicts._statement, (capacity.SERVER_IMAGES, "image_uuid", "postgresql")),
]


def in_another_thread(fn: Callable[[], Any]) -> Any:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def test_per_thread_cache_builds_once_per_thread_and_arguments() -> None:
    calls: list[int] = []

    @per_thread_cache
    def build(n: int) -> object:
        calls.append(n)
        return object()

    here = build(1)
    assert build(1) is here and build(2) is not here and calls == [1, 2]
    assert in_another_thread(lambda: build(1)) is not here
    assert calls == [1, 2, 1]


def test_the_hot_statements_are_never_shared_between_threads() -> None:
    for builder, args in BUILDERS:
        mine = builder(*args)
        assert builder(*args) is mine, builder.__name__
        assert in_another_thread(lambda b=builder, a=args: b(*a)) is not mine, builder.__name__


def test_many_threads_creating_at_once_on_a_cold_cache(ctx: Any) -> None:
    for i in range(4):
        make_server(ctx, hostname=f"cn{i}", ram_mb=262144, disk_mb=4_000_000)
    make_package(ctx, name="tiny", memory=128, disk=1024)
    make_image(ctx, name="base-64")
    make_account(ctx, login="alice")
    compiled = engine_for(ctx.settings.resolved_database_url)._compiled_cache
    failures: list[BaseException] = []

    def create(round_: int, n: int, start: threading.Barrier) -> None:
        start.wait()
        try:
            svc.create_machine(ctx, {"owner": "alice", "package": "tiny", "image": "base-64",
                                     "alias": f"m-{round_}-{n}"}, {"type": "operator"})
        except BaseException as exc:  # noqa: BLE001 - collected, asserted below
            failures.append(exc)

    for round_ in range(8):
        compiled.clear()  # as in a fresh process: nothing compiled yet
        start = threading.Barrier(8)
        threads = [threading.Thread(target=create, args=(round_, n, start)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
