"""README's settings tables list every setting of the head node and the agent, with the
default and help the code has: the tables are what operators read."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from agents.config import AgentSettings
from headnode.config import HeadnodeSettings
from schemas.settings import env_name

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(SDC_[A-Z_]+)` \| (.+?) \| (.+?) \|$", re.MULTILINE)


def documented() -> list[tuple[str, str, str]]:
    return ROW.findall(README.read_text())


def shown(default: Any) -> str:
    if default in ("", None):
        return "(empty)"
    return f"`{str(default).replace(str(Path.home()), '~')}`"


@pytest.mark.parametrize("settings", [HeadnodeSettings, AgentSettings])
def test_every_setting_is_in_the_readme_as_the_code_has_it(settings: type) -> None:
    rows = documented()
    for field in dataclasses.fields(settings):
        row = (env_name(field.name), shown(field.default), field.metadata["help"])
        assert row in rows, f"README.md lacks or misstates {row[0]}: {row}"


def test_the_readme_lists_no_setting_that_is_gone() -> None:
    known = {env_name(f.name) for s in (HeadnodeSettings, AgentSettings)
             for f in dataclasses.fields(s)}
    assert {name for name, _, _ in documented()} <= known
