"""``sdc agent pool create|destroy`` on a real loop device, and ``sdc agent info`` of a linux
node on that pool."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.cli import agent
from tests.support.btrfs import missing_host

pytestmark = pytest.mark.skipif(missing_host() is not None, reason=str(missing_host()))


def test_pool_create_info_destroy(tmp_path: Path) -> None:
    image, mount = tmp_path / "pool.img", tmp_path / "pool"
    env = {"SDC_POOL": "", "SDC_RUNC_ROOT": str(tmp_path / "runc")}
    made = CliRunner().invoke(agent, ["pool", "create", "--size", "256M", str(image),
                                      "--mount", str(mount)], env=env)
    try:
        assert made.exit_code == 0, made.output
        assert f"SDC_POOL={mount}" in made.output
        assert os.path.ismount(mount)
        again = CliRunner().invoke(agent, ["pool", "create", "--size", "256M", str(image),
                                           "--mount", str(mount)], env=env)
        assert again.exit_code == 1 and "exists already" in again.output

        info = CliRunner().invoke(agent, ["info", "--backend", "linux", "--data-dir",
                                          str(tmp_path / "agent")],
                                  env={**env, "SDC_POOL": str(mount)})
        assert info.exit_code == 0, info.output
        sysinfo = json.loads(info.output)
        assert sysinfo["SDC Backend"] == "linux"
        assert 200 <= sysinfo["Zpool Size in MiB"] <= 256
        assert sysinfo["MiB of Memory"] > 0 and sysinfo["CPU Total Cores"] >= 1
    finally:
        gone = CliRunner().invoke(agent, ["pool", "destroy", str(image), "--mount", str(mount)],
                                  env=env)
    assert gone.exit_code == 0, gone.output
    assert not image.exists() and not os.path.ismount(mount)


def test_linux_backend_without_a_pool_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(agent, ["info", "--backend", "linux", "--data-dir",
                                        str(tmp_path)], env={"SDC_POOL": ""})
    assert result.exit_code == 1
    assert result.output.startswith("Error: SDC_POOL") and "Traceback" not in result.output
    not_mounted = CliRunner().invoke(agent, ["info", "--backend", "linux", "--data-dir",
                                             str(tmp_path)], env={"SDC_POOL": str(tmp_path)})
    assert not_mounted.exit_code == 1 and "not a mounted btrfs" in not_mounted.output
