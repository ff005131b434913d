"""Migration 0015_fleet_version adds exactly the index on server_images' image the models
declare (which servers hold an image, asked on every create), on both stores, and its
downgrade removes it."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from headnode.store.db import engine_for
from headnode.store.migrate import alembic_config, upgrade
from headnode.store.models import Base

INDEX = "ix_server_images_image"


def index_drift(url: str) -> list[Any]:
    """The autogenerate comparison's differences about server_images' indexes."""
    with engine_for(url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    return [d for d in diffs if d[0] in ("add_index", "remove_index")
            and d[1].table.name == "server_images"]


def indexes(url: str) -> dict[str, list[str]]:
    with engine_for(url).connect() as conn:
        return {ix["name"]: ix["column_names"]
                for ix in inspect(conn).get_indexes("server_images")}


def test_models_and_migration_agree(database_url: str) -> None:
    assert index_drift(database_url) == []
    assert indexes(database_url)[INDEX] == ["image_uuid"]


def test_downgrade_removes_the_index(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url)
    assert indexes(url)[INDEX] == ["image_uuid"]
    assert index_drift(url) == []
    command.downgrade(alembic_config(url), "0014_server_agent")
    assert INDEX not in indexes(url)
