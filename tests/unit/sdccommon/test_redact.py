"""URLs as logs and messages show them: never with the password."""

from __future__ import annotations

import pytest

from sdccommon.redact import redact_url


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://sdc:s3cret@10.0.0.2:6379/0", "redis://sdc:***@10.0.0.2:6379/0"),
    ("postgresql+psycopg://sdc:p@ss@db/sdc", "postgresql+psycopg://sdc:***@db/sdc"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("postgresql+psycopg://sdc@db/sdc", "postgresql+psycopg://sdc@db/sdc"),
    ("sqlite:////tmp/x.sqlite", "sqlite:////tmp/x.sqlite"),
])
def test_the_password_never_shows(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url) and "p@ss" not in redact_url(url)
