"""Fixtures of the agent tests: a node backend of every kind, and a task registry to host it.

``backend`` is parametrized over :data:`BACKENDS`; a backend that needs the host (btrfs, runc,
vmadm) adds itself here with a ``make_<name>`` that skips when the host cannot run it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents import tasks
from agents.backends.base import NodeBackend
from agents.backends.sim import SimBackend
from schemas.agent import ImageSpecSchema, MachineSpecSchema


def make_sim(tmp_path: Path) -> SimBackend:
    return SimBackend(
        str(uuid.uuid4()),
        "sim-test",
        ram_mb=4096,
        cpus=4,
        pool_size_mb=20_000,
        state_path=tmp_path / "sim-state.json",
    )


BACKENDS: dict[str, Callable[[Path], NodeBackend]] = {"sim": make_sim}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> NodeBackend:
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
def image_spec() -> dict[str, Any]:
    """An image every backend can import (a real backend overrides where it needs files)."""
    return ImageSpecSchema().load(
        {"uuid": str(uuid.uuid4()), "name": "base-64", "version": "24.4.0", "size_mb": 200}
    )


@pytest.fixture
def machine_spec(image_spec: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    """Build a loaded MachineSpecSchema dict of the test image; keywords override fields."""

    def build(**overrides: Any) -> dict[str, Any]:
        raw = {
            "uuid": str(uuid.uuid4()),
            "alias": "web0",
            "owner_uuid": str(uuid.uuid4()),
            "image_uuid": image_spec["uuid"],
            "ram_mb": 256,
            "disk_mb": 1024,
        }
        raw.update(overrides)
        loaded: dict[str, Any] = MachineSpecSchema().load(raw)
        return loaded

    return build


@pytest.fixture
def hosted(tmp_path: Path) -> Iterator[SimBackend]:
    """A sim node served by the task registry for the duration of the test (the task tests
    are about the task contract, not about backends, and use sim-only fault injection)."""
    backend = make_sim(tmp_path)
    saved = dict(tasks.registry)
    tasks.host([backend])
    try:
        yield backend
    finally:
        tasks.registry.clear()
        tasks.registry.update(saved)


class SentTasks:
    """Stands in for ``app.send_task``: records (name, args, options) instead of publishing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any], dict[str, Any]]] = []

    def __call__(self, name: str, args: Any = None, **options: Any) -> None:
        self.calls.append((name, list(args or []), options))

    def named(self, name: str) -> list[tuple[str, list[Any], dict[str, Any]]]:
        return [call for call in self.calls if call[0] == name]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> SentTasks:
    capture = SentTasks()
    monkeypatch.setattr(tasks.app, "send_task", capture)
    return capture
