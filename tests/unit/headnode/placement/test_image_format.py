"""Placement by image file format: a node installs an image only from a file it takes (a
Linux node a root filesystem tarball, a SmartOS node a ZFS send stream, docker layers
excepted). The filter alone on hand-built servers, then real rows on the real PostgreSQL
(create, dry run, ``sdc placement explain``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from headnode.placement import filters as f
from headnode.placement.pipeline import Pipeline
from headnode.placement.runs import backend_installs, reported
from headnode.placement.state import Snapshot
from headnode.services import machines, placement
from headnode.services.errors import InsufficientCapacity
from headnode.store.models import Machine
from tests.unit.headnode.cli.test_placement import cells, live_api
from tests.unit.headnode.cli.test_placement import sdc as run_sdc
from tests.unit.headnode.placement.conftest import POLICY, REQ, context, server
from tests.unit.headnode.services.conftest import (
    make_account,
    make_image,
    make_package,
    make_server,
)

CTX = context()
__all__ = ["live_api"]
LINUX_RUNS = {"os": ["linux", "other"], "type": ["lx-dataset", "docker", "zone-dataset", "other"],
              "format": {"tar": ["lx-dataset", "docker", "zone-dataset", "other"]}}
SMARTOS_RUNS = {"os": None, "type": None,
                "format": {"zfs": ["zone-dataset", "lx-dataset", "zvol"], "tar": ["docker"]}}


def wanting(image_format: str, image_type: str = "zone-dataset") -> Any:
    return dataclasses.replace(REQ, image_os="other", image_type=image_type,
                               image_format=image_format)


@pytest.mark.parametrize(("backend", "runs", "image_format", "image_type", "passes"), [
    ("linux", LINUX_RUNS, "tar", "zone-dataset", True),
    ("linux", LINUX_RUNS, "zfs", "zone-dataset", False),
    ("smartos", SMARTOS_RUNS, "zfs", "zone-dataset", True),
    ("smartos", SMARTOS_RUNS, "tar", "zone-dataset", False),
    ("smartos", SMARTOS_RUNS, "tar", "docker", True),  # imgadm unpacks docker layers
    ("smartos", SMARTOS_RUNS, "zfs", "docker", False),
    # an agent from before the report: its backend's table
    ("linux", None, "tar", "lx-dataset", True),
    ("linux", None, "zfs", "zone-dataset", False),
    ("smartos", None, "zfs", "lx-dataset", True),
    ("smartos", None, "tar", "zone-dataset", False),
    ("sim", None, "zfs", "zone-dataset", True),  # a simulated node takes anything
    ("sim", None, "tar", "zvol", True),
    # no file in the question (a capacity count per package): every server passes, as the
    # filter's ``needed`` says when the pipeline skips it
    ("smartos", None, "", "zone-dataset", True),
    ("smartos", SMARTOS_RUNS, "", "zone-dataset", True),
    ("linux", None, "", "zvol", True),
])
def test_a_server_must_install_the_images_format(
        backend: str, runs: dict[str, Any] | None, image_format: str, image_type: str,
        passes: bool) -> None:
    state = server(backend=backend, runs=reported(runs))
    assert f.image_format(state, wanting(image_format, image_type), POLICY, CTX) is passes


@pytest.mark.parametrize(("backend", "runs"), [("linux", LINUX_RUNS),
                                              ("smartos", SMARTOS_RUNS)])
def test_the_older_agents_table_agrees_with_what_nodes_now_report(
        backend: str, runs: dict[str, Any]) -> None:
    said = reported(runs)
    assert said is not None and said.formats
    for image_format, image_type in said.formats:
        assert backend_installs(backend, image_format, image_type)
        other = "zfs" if image_format == "tar" else "tar"
        assert not backend_installs(backend, other, image_type)


def test_the_funnel_names_the_servers_that_cannot_install_it() -> None:
    fleet = [server("linux", backend="linux", runs=reported(LINUX_RUNS)),
             server("smartos", backend="smartos", runs=reported(SMARTOS_RUNS))]
    decision = Pipeline().decide(Snapshot(fleet), wanting("zfs"), POLICY)
    assert decision.server is not None and decision.server.uuid == "smartos"
    step = next(s for s in decision.steps if s.name == "image-format")
    assert (step.removed, step.reason) == (1, f.IMAGE_FORMAT)
    refused = Pipeline().decide(Snapshot(fleet[:1]), wanting("zfs"), POLICY)
    assert refused.server is None and refused.reasons == {f.IMAGE_FORMAT: 1}


def test_no_image_skips_the_step_and_it_always_runs() -> None:
    decision = Pipeline().decide(Snapshot([server(backend="linux")]), REQ, POLICY)
    assert decision.server is not None
    assert next(s for s in decision.steps if s.name == "image-format").removed == 0
    assert "image-format" in [h.name for h in f.enabled(())]


# -- the live fleet: formats from sysinfo, from the image's file entry ------------------------


def node(ctx: Any, hostname: str, backend: str, runs: dict[str, Any]) -> Any:
    return make_server(ctx, hostname=hostname, backend=backend, sysinfo={"SDC Runs": runs})


@pytest.fixture
def mixed(ctx: Any) -> dict[str, Any]:
    """A Linux node and a SmartOS node; a tarball image (no format: as images recorded before
    formats) and a ZFS stream image, both zone-datasets of OS other (both nodes run them)."""
    return {
        "linux": node(ctx, "linux0", "linux", LINUX_RUNS),
        "smartos": node(ctx, "smartos0", "smartos", SMARTOS_RUNS),
        "package": make_package(ctx, name="small", memory=1024, disk=10240),
        "tarball": make_image(ctx, name="busybox", os="other", type="zone-dataset",
                              files=[{"sha256": "a" * 64, "size": 1, "compression": "gzip"}]),
        "stream": make_image(ctx, name="base-64", os="other", type="zone-dataset",
                             files=[{"sha256": "b" * 64, "size": 1, "compression": "gzip",
                                     "format": "zfs"}]),
        "owner": make_account(ctx, login="alice"),
    }


def create(ctx: Any, image: str) -> dict[str, Any]:
    return machines.create_machine(ctx, {"owner": "alice", "package": "small", "image": image},
                                   {"type": "operator"})


def test_each_image_goes_to_the_node_that_installs_it(ctx: Any, mixed: dict[str, Any]) -> None:
    for _ in range(3):  # spread alone would alternate
        assert create(ctx, "base-64")["server_uuid"] == mixed["smartos"].uuid
        assert create(ctx, "busybox")["server_uuid"] == mixed["linux"].uuid


def test_an_image_no_node_installs_is_refused_and_writes_nothing(
        ctx: Any, mixed: dict[str, Any]) -> None:
    make_image(ctx, name="docker-zfs", os="other", type="docker",
               files=[{"sha256": "c" * 64, "size": 1, "format": "zfs"}])
    with pytest.raises(InsufficientCapacity) as refused:
        create(ctx, "docker-zfs")
    assert refused.value.reasons == {f.IMAGE_FORMAT: 2}
    with ctx.read() as session:
        assert session.query(Machine).count() == 0


def test_explain_shows_the_step(ctx: Any, mixed: dict[str, Any]) -> None:
    answer = placement.dry_run(ctx, {"package": "small", "image": "base-64"})
    assert answer["server_uuid"] == mixed["smartos"].uuid
    assert {s["name"]: s["removed"] for s in answer["steps"]}["image-format"] == 1


def test_sdc_placement_explain_prints_the_step(live_api: tuple[str, Any]) -> None:
    _, app_ctx = live_api
    node(app_ctx, "linux0", "linux", LINUX_RUNS)
    make_package(app_ctx, name="small", memory=1024, disk=10240)
    make_image(app_ctx, name="base-64", os="other", type="zone-dataset",
               files=[{"sha256": "b" * 64, "size": 1, "format": "zfs"}])
    refused = run_sdc(live_api, "placement", "explain", "--package", "small", "--image",
                      "base-64")
    assert refused.exit_code == 0, refused.output
    assert cells(refused.output, "image-format")[1:] == ["1", "0", f.IMAGE_FORMAT]
