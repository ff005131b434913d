"""Migration 0010_nics adds exactly the network and NIC columns the models declare, gives the
NICs that exist their interfaces and states, and its downgrade removes it all."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from headnode.store.db import engine_for
from headnode.store.migrate import alembic_config, upgrade
from headnode.store.models import Base

COLUMNS = {("networks", "mtu"), ("networks", "routes"), ("nics", "interface"),
           ("nics", "state"), ("nics", "allow_ip_spoofing"), ("nics", "allow_mac_spoofing"),
           ("nics", "allow_dhcp_spoofing"), ("nics", "allow_restricted_traffic"),
           ("nics", "allowed_ips")}
INDEX = "uq_nics_machine_interface"


def _touches_ours(diff: Any) -> bool:
    items = diff if isinstance(diff, list) else [diff]
    for item in items:
        if getattr(item[1], "name", None) == INDEX:  # add/remove_index
            return True
        # ("add_column", schema, table, Column) or ("modify_*", schema, table, column, ...)
        if len(item) > 3 and (item[2], getattr(item[3], "name", item[3])) in COLUMNS:
            return True
    return False


def _columns(url: str) -> set[tuple[str, str]]:
    with engine_for(url).connect() as conn:
        return {(table, c["name"]) for table in ("networks", "nics")
                for c in inspect(conn).get_columns(table)}


def test_models_and_migration_agree(database_url: str) -> None:
    with engine_for(database_url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        uniques = {i["name"] for i in inspect(conn).get_indexes("nics") if i["unique"]}
    assert [d for d in diffs if _touches_ours(d)] == []
    assert INDEX in uniques
    assert _columns(database_url) >= COLUMNS


def _machine(conn: Any, state: str) -> str:
    # the machines table is as 0009 left it: only its columns are written (the model's
    # defaults of later columns would name columns it does not have yet)
    uuid = str(uuid4())
    conn.execute(text(
        "INSERT INTO machines (uuid, alias, owner_uuid, package_uuid, image_uuid, state,"
        " ram_mb, disk_mb, cpu_cap, vcpus, max_lwps, brand, tags, customer_metadata,"
        " created_at, updated_at) VALUES (:uuid, :state, 'o', 'p', 'i', :state, 1, 1, 0, 1,"
        " 4000, 'joyent', '{}', '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"),
        {"uuid": uuid, "state": state})
    return uuid


def test_existing_nics_get_interfaces_in_machine_order_and_states(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url, "0009")
    # a plain engine: SQLite's foreign keys off, only machines and their NICs are written
    with create_engine(url).begin() as conn:
        running, stopped, provisioning = (_machine(conn, s)
                                          for s in ("running", "stopped", "provisioning"))
        conn.execute(text(
            "INSERT INTO networks (uuid, name, subnet, provision_start_ip, provision_end_ip,"
            " resolvers, vlan_id, nic_tag, public, description, created_at) VALUES ('n', 'n',"
            " '10.0.0.0/24', '10.0.0.1', '10.0.0.254', '[]', 0, 'external', 1, '',"
            " '2026-01-01 00:00:00')"))
        for n, (mac, machine, primary, created) in enumerate([
                ("90:b8:d0:00:00:01", running, 0, "2026-01-01 00:00:01"),
                ("90:b8:d0:00:00:02", running, 1, "2026-01-01 00:00:02"),
                ("90:b8:d0:00:00:04", running, 0, "2026-01-01 00:00:01"),
                ("90:b8:d0:00:00:03", stopped, 1, "2026-01-01 00:00:01"),
                ("90:b8:d0:00:00:05", provisioning, 1, "2026-01-01 00:00:01")]):
            conn.execute(text(
                "INSERT INTO nics (mac, machine_uuid, network_uuid, ip, ip_num, \"primary\","
                " created_at) VALUES (:mac, :machine, 'n', :ip, :num, :primary, :created)"),
                {"mac": mac, "machine": machine, "ip": f"10.0.0.{n + 1}", "num": n + 1,
                 "primary": primary, "created": created})
    upgrade(url, "0010_nics")
    with engine_for(url).connect() as conn:
        rows = {mac: (interface, state) for mac, interface, state in conn.execute(text(
            "SELECT mac, interface, state FROM nics"))}
        flags = conn.execute(text("SELECT DISTINCT allow_ip_spoofing, allowed_ips FROM nics"
                                  )).all()
        networks = conn.execute(text("SELECT mtu, routes FROM networks")).all()
    assert rows == {
        # the primary first, then oldest first, the mac breaking a tie
        "90:b8:d0:00:00:02": ("net0", "running"), "90:b8:d0:00:00:01": ("net1", "running"),
        "90:b8:d0:00:00:04": ("net2", "running"), "90:b8:d0:00:00:03": ("net0", "stopped"),
        "90:b8:d0:00:00:05": ("net0", "provisioning")}
    assert [tuple(r) for r in flags] == [(0, "[]")]
    assert [tuple(r) for r in networks] == [(1500, "{}")]

    command.downgrade(alembic_config(url), "0009")
    assert not COLUMNS & _columns(url)
