"""The head node's HTTP app on a real PostgreSQL (fixtures in tests/conftest.py), with its jobs
recorded instead of sent: shared by the operator API and CloudAPI tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from headnode.api.app import create_app
from tests.support.jobqueue import RecordingJobQueue


@pytest.fixture
def jobqueue() -> RecordingJobQueue:
    return RecordingJobQueue()


@pytest.fixture
def app(settings: Any, jobqueue: RecordingJobQueue) -> Flask:
    return create_app(settings, jobs=jobqueue)


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as test_client:
        yield test_client
