"""Migration 0011_image_boot adds exactly the image and machine columns the models declare;
images that existed get no tags and no init, and its downgrade removes them."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import create_engine, text

from headnode.store.db import engine_for
from headnode.store.migrate import alembic_config, upgrade
from tests.support.migrations import columns_of, model_drift

COLUMNS = {("images", "tags"), ("images", "init"), ("machines", "metadata_serial")}


def _columns(url: str) -> dict[tuple[str, str], Any]:
    return columns_of(url, "images", "machines")


def test_models_and_migration_agree(database_url: str) -> None:
    assert model_drift(database_url, COLUMNS) == []
    columns = _columns(database_url)
    assert set(columns) >= COLUMNS
    assert not columns[("images", "tags")]["nullable"]
    assert columns[("images", "init")]["nullable"]
    assert columns[("machines", "metadata_serial")]["nullable"]


def test_existing_images_get_empty_tags_and_downgrade_removes_the_columns(
        tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url, "0010_nics")
    with create_engine(url).begin() as conn:
        conn.execute(text(
            "INSERT INTO images (uuid, name, version, os, type, state, public, description,"
            " size_mb, requirements, traits, files, created_at, updated_at) VALUES ('i', 'old',"
            " '1', 'linux', 'lx-dataset', 'active', 1, '', 1, '{}', '{}', '[]',"
            " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
    upgrade(url, "0011_image_boot")
    with engine_for(url).connect() as conn:
        rows = conn.execute(text("SELECT tags, init FROM images")).all()
    assert [tuple(r) for r in rows] == [("{}", None)]

    command.downgrade(alembic_config(url), "0010_nics")
    assert not COLUMNS & set(_columns(url))
