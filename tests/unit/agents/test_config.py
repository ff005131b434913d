from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from agents.config import AgentSettings, parse_traits, resolve_hostname, resolve_server_uuid
from schemas.settings import SettingsError, load


def test_defaults_and_environment(tmp_path: Path) -> None:
    settings = load(AgentSettings, environ={"SDC_SIM_RAM_MB": "2048", "SDC_SIM_STATE": "no",
                                            "SDC_DATA_DIR": str(tmp_path)})
    assert settings.sim_ram_mb == 2048 and settings.sim_state is False
    assert settings.data_dir == tmp_path
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.heartbeat_interval == 5.0 and settings.status_interval == 60.0


def test_server_uuid_is_created_once_and_kept(tmp_path: Path) -> None:
    settings = load(AgentSettings, environ={}, data_dir=tmp_path / "agent")
    first = resolve_server_uuid(settings)
    assert uuid.UUID(first)
    assert resolve_server_uuid(settings) == first
    assert (tmp_path / "agent" / "server-uuid").read_text().strip() == first


def test_configured_server_uuid_wins(tmp_path: Path) -> None:
    fixed = str(uuid.uuid4())
    settings = load(AgentSettings, environ={}, data_dir=tmp_path, server_uuid=fixed.upper())
    assert resolve_server_uuid(settings) == fixed
    assert not (tmp_path / "server-uuid").exists()


def test_bad_values_name_their_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SDC_SERVER_UUID"):
        resolve_server_uuid(load(AgentSettings, environ={}, server_uuid="nope"))
    with pytest.raises(SettingsError, match="SDC_SIM_TRAITS"):
        parse_traits(load(AgentSettings, environ={}, sim_traits="[1]"))


def test_hostname_defaults_to_the_machine() -> None:
    assert resolve_hostname(load(AgentSettings, environ={}))
    assert resolve_hostname(load(AgentSettings, environ={}, hostname="cn7")) == "cn7"
