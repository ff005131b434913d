"""The head node's database engine through a PostgreSQL restart or failover (real PostgreSQL):
a pooled connection the server dropped is replaced at checkout, and a libpq multi-host URL
reaches whichever host is up and writable."""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from headnode.store.db import make_engine
from tests.support.net import free_port


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_the_server_dropped_is_replaced_at_checkout(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        first = backend_pid(engine)  # back in the pool, idle
        with make_engine(database_url).connect() as admin:
            # what a restart or a failover does to every open connection
            assert admin.execute(text("SELECT pg_terminate_backend(:pid)"),
                                 {"pid": first}).scalar_one()
        assert backend_pid(engine) != first  # no error: the pre-ping found it dead
    finally:
        engine.dispose()


def test_a_multi_host_url_reaches_the_host_that_is_up(database_url: str) -> None:
    # libpq tries the hosts in order: the first (a former primary) is down here
    url = make_url(database_url)
    hosts = f"host=127.0.0.1:{free_port()}&host={url.host}:{url.port}"
    engine = make_engine(f"postgresql+psycopg://{url.username}:{url.password}@/{url.database}"
                         f"?{hosts}&target_session_attrs=read-write")
    try:
        with engine.connect() as conn:
            port, standby = conn.execute(
                text("SELECT inet_server_port(), pg_is_in_recovery()")).one()
        assert (port, standby) == (url.port, False)
    finally:
        engine.dispose()
