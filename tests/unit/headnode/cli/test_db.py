"""`sdc headnode db upgrade` says what it did; `sdc headnode serve` refuses a database that is
not migrated (it would answer every request with 500), naming the command that fixes it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from headnode.store.migrate import applied_heads, pending, upgrade

SDC = str(Path(sys.executable).parent / "sdc")


def sdc(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SDC_")}
    return subprocess.run([SDC, *args], env={**clean, **env}, capture_output=True, text=True,
                          timeout=timeout, check=False, stdin=subprocess.DEVNULL)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/data/sdc.db"
    server: Any = request.getfixturevalue("postgres_server")
    return str(server.create_database(f"cli_{uuid.uuid4().hex[:8]}"))


def env_for(url: str, tmp_path: Path) -> dict[str, str]:
    return {"SDC_DATABASE_URL": url, "SDC_DATA_DIR": str(tmp_path / "data"),
            "SDC_API_BIND": "127.0.0.1:1", "SDC_REDIS_URL": "redis://127.0.0.1:1/0"}


def test_upgrade_creates_then_migrates_then_is_up_to_date(empty_db: str,
                                                         tmp_path: Path) -> None:
    env = env_for(empty_db, tmp_path)
    created = sdc(env, "headnode", "db", "upgrade")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created the schema in the database at ")
    assert "up to date" not in created.stdout
    assert pending(empty_db) == []
    again = sdc(env, "headnode", "db", "upgrade")
    assert again.returncode == 0, again.stderr
    assert "is already up to date (revision " in again.stdout
    assert f"(revision {', '.join(applied_heads(empty_db))})" in again.stdout


def test_upgrade_of_an_old_schema_names_what_it_applied(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/data/sdc.db"
    upgrade(url, "0001")
    migrated = sdc(env_for(url, tmp_path), "headnode", "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("migrated the database at ")
    assert "applied 0002" in migrated.stdout and "revision 0001 -> " in migrated.stdout
    assert pending(url) == []


def test_serve_refuses_an_unmigrated_database(empty_db: str, tmp_path: Path) -> None:
    refused = sdc(env_for(empty_db, tmp_path), "headnode", "serve", timeout=60)
    assert refused.returncode == 1
    assert "is not migrated" in refused.stderr
    assert "run `sdc headnode db upgrade` first" in refused.stderr
    assert "Traceback" not in refused.stderr
    # asking did not create a SQLite file (nor a schema)
    assert not (tmp_path / "data" / "sdc.db").exists()
    assert applied_heads(empty_db) == ()


def test_serve_refuses_a_schema_behind_the_code(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/data/sdc.db"
    upgrade(url, "0001")
    refused = sdc(env_for(url, tmp_path), "headnode", "serve", timeout=60)
    assert refused.returncode == 1
    assert "migration(s) to apply: 0002" in refused.stderr
    assert "sdc headnode db upgrade" in refused.stderr


def test_serve_refuses_a_database_it_cannot_reach(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"
    refused = sdc(env_for(url, tmp_path), "headnode", "serve", timeout=60)
    assert refused.returncode == 1
    assert "cannot check the database at postgresql+psycopg://nobody:***@" in refused.stderr
    assert "secret" not in refused.stderr
