"""The `sdc` command against a real cloud: bad input is one clear line and writes nothing.
(`sdc up --demo`, what `make demo` runs, is tested in test_demo_rerun.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import SDC, sdc
from tests.support.net import free_port


@pytest.fixture(scope="module")
def seeded(cloud: Any) -> dict[str, Any]:
    return cloud.seed()


def counts(cloud: Any) -> tuple[int, int]:
    return len(cloud.api.get("/ops/machines")), len(cloud.api.get("/ops/jobs"))


@pytest.mark.parametrize(("args", "field"), [
    (["--owner", "alice", "--package", "no-such-package", "--image", "base-64"], "package"),
    (["--owner", "alice", "--package", "small", "--image", "no-such-image"], "image"),
    (["--owner", "nobody", "--package", "small", "--image", "base-64"], "owner"),
    (["--owner", "alice", "--package", "small", "--image", "base-64", "--alias", "bad alias!"],
     "alias"),
])
def test_vm_create_bad_input_names_the_field(cloud: Any, seeded: dict[str, Any],
                                             args: list[str], field: str) -> None:
    before = counts(cloud)
    result = sdc(cloud, "vm", "create", *args)
    assert result.returncode == 1
    assert field in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert counts(cloud) == before


def test_package_create_ill_typed_is_refused(cloud: Any, seeded: dict[str, Any]) -> None:
    result = sdc(cloud, "package", "create", "tiny", "--memory", "lots", "--disk", "10")
    assert result.returncode == 2  # click's usage error, before any request
    assert "--memory" in result.stderr
    result = sdc(cloud, "package", "create", "tiny", "--memory", "0", "--disk", "10")
    assert result.returncode == 2 and "--memory" in result.stderr
    result = sdc(cloud, "package", "create", "small", "--memory", "512", "--disk", "10")
    assert result.returncode == 1 and "small" in result.stderr  # the name is taken: 409
    assert "tiny" not in {p["name"] for p in cloud.api.get("/ops/packages")}


def test_vm_create_wait_and_job_get(cloud: Any, seeded: dict[str, Any]) -> None:
    result = sdc(cloud, "vm", "create", "--owner", "alice", "--package", "small",
                 "--image", "base-64", "--alias", "from-cli", "--tag", "role=db", "--wait")
    assert result.returncode == 0, result.stderr
    machine = cloud.api.get("/ops/machines", params={"alias": "from-cli"})[0]
    assert machine["state"] == "running" and machine["tags"] == {"role": "db"}
    shown = sdc(cloud, "job", "get", machine["job_uuid"] or
                cloud.api.get("/ops/jobs", params={"machine_uuid": machine["uuid"]})[0]["uuid"])
    assert shown.returncode == 0, shown.stderr
    for step in ("validate", "ensure_image", "create_machine", "commit_usage"):
        assert step in shown.stdout


def test_unreachable_head_node_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SDC_API_URL": f"http://127.0.0.1:{free_port()}",
           "SDC_OPERATOR_TOKEN": "x"}
    result = subprocess.run([SDC, "server", "list"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 1
    assert "cannot reach the head node" in result.stderr
    assert "Traceback" not in result.stderr
