"""The environment of a test (or bench) head node's processes: API, worker and beat."""

from __future__ import annotations

from pathlib import Path

from tests.support.credentials import TEST_MESSAGE_KEY


def headnode_env(database_url: str, redis_url: str, data_dir: Path, token: str, port: int,
                 api_workers: int = 2, **extra: str) -> dict[str, str]:
    """Settings on loopback ``port``, signing with the key test nodes' credentials use."""
    return {
        "SDC_DATABASE_URL": database_url,
        "SDC_REDIS_URL": redis_url,
        "SDC_DATA_DIR": str(data_dir),
        "SDC_OPERATOR_TOKEN": token,
        "SDC_MESSAGE_KEY": TEST_MESSAGE_KEY,
        "SDC_API_BIND": f"127.0.0.1:{port}",
        "SDC_API_WORKERS": str(api_workers),
        **extra,
    }
