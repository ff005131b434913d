"""A transaction aborted by PostgreSQL to break a lock cycle runs again from the start."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError

from headnode.services import retry
from headnode.store.models import Server
from tests.unit.headnode.services.conftest import make_server, server_row


def test_both_sides_of_a_deadlock_commit(ctx: Any, caplog: pytest.LogCaptureFixture) -> None:
    one, two = make_server(ctx, hostname="cn1").uuid, make_server(ctx, hostname="cn2").uuid
    both_hold_one = threading.Barrier(2, timeout=10)
    runs: list[str] = []

    def count_on(first: str, then: str) -> None:
        with ctx.transaction() as session:
            runs.append(first)
            for n, uuid in enumerate((first, then)):
                session.execute(update(Server).where(Server.uuid == uuid)
                                .values(machine_count=Server.machine_count + 1))
                if n == 0 and runs.count(first) == 1:
                    both_hold_one.wait()  # the first run of each: a certain cycle

    errors: list[BaseException] = []

    def side(first: str, then: str) -> None:
        try:
            retry.in_transaction(lambda: count_on(first, then), "test")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    caplog.set_level(logging.WARNING, logger=retry.__name__)
    threads = [threading.Thread(target=side, args=pair) for pair in ((one, two), (two, one))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(runs) == 3  # one side ran twice
    assert [server_row(ctx, u).machine_count for u in (one, two)] == [2, 2]
    assert "DeadlockDetected" in caplog.text


def test_a_victim_every_time_is_unavailable_not_an_error(ctx: Any) -> None:
    runs = []

    def always_a_victim() -> None:
        runs.append(1)
        with ctx.transaction() as session:
            session.execute(text("DO $$ BEGIN RAISE EXCEPTION 'cycle' "
                                 "USING ERRCODE = '40P01'; END $$"))

    with pytest.raises(retry.DatabaseUnavailable) as raised:
        retry.in_transaction(always_a_victim, "test", base_delay=0.001)
    assert len(runs) == retry.ATTEMPTS
    assert (raised.value.status, raised.value.retry_after) == (503, retry.RETRY_AFTER)


def test_other_errors_are_not_retried(ctx: Any) -> None:
    server = make_server(ctx, hostname="cn1")
    runs = []

    def duplicate() -> None:
        runs.append(1)
        make_server(ctx, uuid=server.uuid)

    with pytest.raises(IntegrityError):
        retry.in_transaction(duplicate, "test")
    assert runs == [1]
