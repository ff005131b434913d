"""Which image file formats each node installs (sysinfo "SDC Runs" ``format``), on the wire,
and a Linux node's refusal of a ZFS send stream before its download."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from agents.backends.base import BackendError
from agents.backends.host.cmd import use_runner
from agents.backends.linux import nodeinfo
from agents.backends.linux.images import ImageStore
from agents.backends.linux.storage import BtrfsStorage
from agents.backends.smartos import SmartOSBackend
from agents.backends.transfer import ImageStoreLink
from schemas.agent import SYSINFO_RUNS, SysinfoSchema
from tests.support.agent_images import FileServer, file_entry
from tests.support.zfs_stream import zfs_stream
from tests.unit.agents.conftest import store_url
from tests.unit.agents.recorded import RecordedHost
from tests.unit.agents.smartos_host import recorded


def test_a_smartos_nodes_formats_cross_the_wire(tmp_path: Path) -> None:
    with use_runner(RecordedHost({("sysinfo",): recorded("sysinfo.json")})):
        sysinfo = SmartOSBackend(str(uuid.uuid4()), tmp_path).sysinfo()
    wire = SysinfoSchema().dump(sysinfo)
    assert SysinfoSchema().validate(wire) == {}
    formats = SysinfoSchema().load(wire)["runs"]["format"]
    assert formats == sysinfo["runs"]["format"]
    assert formats["tar"] == ["docker"] and {"zone-dataset", "lx-dataset"} <= {*formats["zfs"]}
    assert json.loads(json.dumps(wire))[SYSINFO_RUNS]["format"] == formats


def test_a_linux_node_installs_tarballs_of_every_type_it_runs() -> None:
    assert {"tar": list(nodeinfo.RUNS_TYPES)} == nodeinfo.RUNS_FORMATS


def test_a_linux_node_refuses_a_zfs_stream_before_downloading_it(tmp_path: Path) -> None:
    server = FileServer()
    data = gzip.compress(zfs_stream())
    server.files["image.zfs.gz"] = data
    image: dict[str, Any] = {
        "uuid": str(uuid.uuid4()), "name": "base-64", "version": "1", "type": "zone-dataset",
        "files": [{**file_entry(data), "format": "zfs"}],
        "source": {"url": server.url("image.zfs.gz"), "headers": {}}}
    store = ImageStore(BtrfsStorage(tmp_path / "pool"), tmp_path / "manifests", tmp_path / "tmp",
                       ImageStoreLink(store_url(server)))
    try:
        with pytest.raises(BackendError) as exc:
            store.ensure_present(image)
    finally:
        server.close()
    assert exc.value.code == "ImageFormatNotSupported"
    assert server.requests == [] and list((tmp_path / "tmp").iterdir()) == []
