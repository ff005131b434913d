"""headnode.config: the head node's settings and the values derived from them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from headnode.config import HeadnodeSettings, get_settings
from schemas.settings import describe, load


def test_sqlite_file_in_the_data_dir_by_default(tmp_path):
    settings = load(HeadnodeSettings, environ={"SDC_DATA_DIR": str(tmp_path)})
    assert settings.database_url == ""
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'sdc.sqlite'}"


def test_configured_database_url_wins(tmp_path):
    url = "postgresql+psycopg://sdc@db.example/sdc"
    settings = load(HeadnodeSettings, environ={"SDC_DATABASE_URL": url})
    assert settings.resolved_database_url == url


def test_operator_token_is_generated_once_and_reused(tmp_path):
    settings = load(HeadnodeSettings, environ={}, data_dir=tmp_path / "data")
    token = settings.resolved_operator_token()
    assert len(token) >= 32
    path = tmp_path / "data" / "operator-token"
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a secret: owner only
    # Another process (a new settings object) finds the same token.
    again = load(HeadnodeSettings, environ={}, data_dir=tmp_path / "data")
    assert again.resolved_operator_token() == token


def test_processes_starting_at_once_agree_on_one_message_key(tmp_path):
    """The API, the worker and beat may make the key at the same moment: one key wins."""
    code = ("import sys; from headnode.config import get_settings; "
            "print(get_settings(data_dir=sys.argv[1]).resolved_message_key().decode())")
    starts = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "data")],
                               stdout=subprocess.PIPE, text=True, env={**os.environ,
                                                                      "SDC_MESSAGE_KEY": ""})
              for _ in range(4)]
    keys = {p.communicate(timeout=60)[0].strip() for p in starts}
    path = tmp_path / "data" / "message-key"
    assert keys == {path.read_text().strip()} and len(path.read_text().strip()) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["message-key"]  # no temp file left


def test_configured_operator_token_wins_and_writes_nothing(tmp_path):
    settings = load(HeadnodeSettings, environ={"SDC_OPERATOR_TOKEN": "s3cret"},
                    data_dir=tmp_path)
    assert settings.resolved_operator_token() == "s3cret"
    assert not (tmp_path / "operator-token").exists()


def test_get_settings_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SDC_API_WORKERS", "5")
    monkeypatch.setenv("SDC_HEARTBEAT_LIFETIME", "3.5")
    monkeypatch.delenv("SDC_CONFIG", raising=False)
    settings = get_settings(data_dir=tmp_path)
    assert settings.api_workers == 5
    assert settings.heartbeat_lifetime == 3.5
    assert settings.data_dir == tmp_path


def test_every_setting_has_help():
    assert all(help_text for _, _, help_text in describe(HeadnodeSettings))
