"""What each backend tells the head node it runs (sysinfo "SDC Runs")."""

from __future__ import annotations

import json
from pathlib import Path

from agents.backends.host.cmd import use_runner
from agents.backends.linux import RUNS_OSES, RUNS_TYPES
from agents.backends.smartos import SmartOSBackend
from schemas.agent import SYSINFO_RUNS, SysinfoSchema
from schemas.ops import IMAGE_OSES, IMAGE_TYPES
from tests.unit.agents.conftest import make_sim
from tests.unit.agents.recorded import RecordedHost
from tests.unit.agents.smartos_host import recorded


def wire_runs(sysinfo: dict) -> dict:
    wire = SysinfoSchema().dump(sysinfo)
    assert SysinfoSchema().validate(wire) == {}
    return wire[SYSINFO_RUNS]


def smartos_runs(tmp_path: Path, **node_changes: object) -> dict:
    node = {**json.loads(recorded("sysinfo.json")), **node_changes}
    with use_runner(RecordedHost({("sysinfo",): json.dumps(node)})):
        sysinfo = SmartOSBackend("44454c4c-4800-1034-804a-b2c04f354d32", tmp_path).sysinfo()
    return wire_runs(sysinfo)


def test_a_sim_node_runs_every_image(tmp_path: Path) -> None:
    assert wire_runs(make_sim(tmp_path).sysinfo()) == {"os": list(IMAGE_OSES),
                                                       "type": list(IMAGE_TYPES)}


def test_a_smartos_node_runs_zvols_only_with_hardware_virtualization(tmp_path: Path) -> None:
    hvm = smartos_runs(tmp_path)  # the recorded node is bhyve and VM capable
    assert hvm["os"] == list(IMAGE_OSES) and "zvol" in hvm["type"]
    assert {"zone-dataset", "lx-dataset", "docker"} <= set(hvm["type"])
    bhyve_only = smartos_runs(tmp_path, **{"VM Capable": False})
    assert "zvol" in bhyve_only["type"]
    zones_only = smartos_runs(tmp_path, **{"VM Capable": False, "Bhyve Capable": False})
    assert "zvol" not in zones_only["type"] and "zone-dataset" in zones_only["type"]


def test_a_linux_node_runs_linux_containers() -> None:
    # (its sysinfo needs a pool: the conformance test dumps it on a real one)
    assert set(RUNS_OSES) == {"linux", "other"}
    assert "zvol" not in RUNS_TYPES and set(RUNS_TYPES) <= set(IMAGE_TYPES)


def test_an_older_agents_sysinfo_has_no_report() -> None:
    wire = SysinfoSchema().dump({"uuid": "u", "hostname": "h", "backend": "linux", "cpus": 1,
                                 "ram_mb": 1, "pool_size_mb": 1})
    assert SYSINFO_RUNS not in wire
    assert SysinfoSchema().load(wire)["runs"] is None
