"""Fixtures of the agent tests: a node backend of every kind, and a task registry to host it.

``backend`` is parametrized over :data:`BACKENDS`: ``sim``; ``linux``, a real LinuxBackend on
the session's btrfs pool (loop device) running real runc containers of a busybox image that a
local HTTP server hands out, its node network (bridges, veths, nft table) in a namespace of
the session's (skipped, with the reason, only where the host lacks root, loop devices, btrfs,
runc or the network tools); and ``smartos``, driven through recorded vmadm/imgadm/zfs
outputs.
``image_spec`` is an image the parametrized backend can import.
"""

from __future__ import annotations

import contextlib
import gzip
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents import tasks
from agents.backends.base import NodeBackend
from agents.backends.host.cmd import use_runner, use_streamer
from agents.backends.linux import LinuxBackend
from agents.backends.linux.metadata_events import MetadataListener
from agents.backends.linux.network import NodeNetwork
from agents.backends.linux.runtime import netns_dir
from agents.backends.linux.storage import BtrfsStorage
from agents.backends.sim import SimBackend
from agents.backends.smartos import SmartOSBackend
from schemas.agent import ImageSpecSchema, MachineSpecSchema
from tests.support import netns
from tests.support.agent_images import FileServer, busybox_tarball, file_entry
from tests.support.btrfs import LoopPool, create_pool, destroy_pool, missing_host
from tests.support.zfs_stream import zfs_stream
from tests.unit.agents.smartos_host import FakeSmartOS


def make_sim(tmp_path: Path, image_store_url: str = "") -> SimBackend:
    return SimBackend(
        str(uuid.uuid4()),
        "sim-test",
        ram_mb=4096,
        cpus=4,
        pool_size_mb=20_000,
        state_path=tmp_path / "sim-state.json",
        image_store_url=image_store_url,
    )


BACKENDS: dict[str, Callable[[Path, str], NodeBackend]] = {"sim": make_sim}
#: backends built by a fixture of that name (they need session resources)
FIXTURE_BACKENDS = ("linux", "smartos")


@pytest.fixture(params=sorted([*BACKENDS, *FIXTURE_BACKENDS]))
def backend(request: pytest.FixtureRequest, tmp_path: Path, image_store_url: str) -> NodeBackend:
    """A node of each kind whose image store (SDC_IMAGE_STORE_URL) is ``image_server``."""
    if request.param in BACKENDS:
        return BACKENDS[request.param](tmp_path, image_store_url)
    made: NodeBackend = request.getfixturevalue(f"{request.param}_backend")
    return made


def _backend_kind(request: pytest.FixtureRequest) -> str | None:
    callspec = getattr(request.node, "callspec", None)
    return callspec.params.get("backend") if callspec is not None else None


@pytest.fixture
def image_spec(request: pytest.FixtureRequest) -> dict[str, Any]:
    """An image the test's backend can import: a real file in the node's format (a busybox
    tarball for linux, a ZFS send stream for smartos), a manifest without a file for sim."""
    kind = _backend_kind(request)
    if kind in FIXTURE_BACKENDS:
        spec: dict[str, Any] = request.getfixturevalue(
            "zfs_stream_image" if kind == "smartos" else "busybox_image")
        return spec
    return ImageSpecSchema().load(
        {"uuid": str(uuid.uuid4()), "name": "base-64", "version": "24.4.0", "size_mb": 200}
    )


# -- the linux backend on a real pool ---------------------------------------------------------

IMAGE_TOKEN = {"Authorization": "Bearer node-test-token"}


@pytest.fixture(scope="session")
def btrfs_pool() -> Iterator[LoopPool]:
    """A 2 GiB btrfs pool with quotas on a loop device, for the whole session."""
    reason = missing_host()
    if reason is not None:
        pytest.skip(reason)
    pool = create_pool("agents")
    try:
        yield pool
    finally:
        destroy_pool(pool)


@pytest.fixture(scope="session")
def image_server() -> Iterator[FileServer]:
    """Serves busybox.tar.gz (and whatever a test adds) to nodes that send IMAGE_TOKEN."""
    server = FileServer(required_headers=dict(IMAGE_TOKEN))
    server.files["busybox.tar.gz"] = busybox_tarball()
    try:
        yield server
    finally:
        server.close()


def served_image(image_server: FileServer, filename: str, compression: str = "gzip",
                 applets: tuple[str, ...] | None = None, name: str = "busybox"
                 ) -> dict[str, Any]:
    """A new image (fresh uuid) whose file, a busybox root filesystem (with ``applets``
    linked; None: the usual ones), ``image_server`` serves as ``filename``."""
    if filename not in image_server.files:
        image_server.files[filename] = (busybox_tarball(compression) if applets is None
                                        else busybox_tarball(compression, applets=applets))
    loaded: dict[str, Any] = ImageSpecSchema().load({
        "uuid": str(uuid.uuid4()), "name": name, "version": "1.35",
        "files": [file_entry(image_server.files[filename], compression)],
        "source": {"url": image_server.url(filename), "headers": dict(IMAGE_TOKEN)},
    })
    return loaded


def store_url(server: FileServer) -> str:
    """The SDC_IMAGE_STORE_URL of a node whose image store ``server`` is."""
    return server.url("")


@pytest.fixture(scope="session")
def image_store_url(image_server: FileServer) -> str:
    return store_url(image_server)


@pytest.fixture
def busybox_image(image_server: FileServer) -> dict[str, Any]:
    """A new image (fresh uuid) whose file is the busybox root filesystem."""
    return served_image(image_server, "busybox.tar.gz")


@pytest.fixture
def zfs_stream_image(image_server: FileServer) -> dict[str, Any]:
    """A new image (fresh uuid) whose file is a (tiny) gzip'd ZFS send stream, the format
    ``imgadm install`` takes for every type but docker."""
    if "image.zfs.gz" not in image_server.files:
        image_server.files["image.zfs.gz"] = gzip.compress(zfs_stream())
    loaded: dict[str, Any] = ImageSpecSchema().load({
        "uuid": str(uuid.uuid4()), "name": "busybox", "version": "1.35",
        "files": [{**file_entry(image_server.files["image.zfs.gz"]), "format": "zfs"}],
        "source": {"url": image_server.url("image.zfs.gz"), "headers": dict(IMAGE_TOKEN)},
    })
    return loaded


#: the nic tags of the test node: host-local (etherstubs), as the conformance test's NICs use
TEST_NIC_TAGS: dict[str, str | None] = {"admin": None, "external": None}


@pytest.fixture(scope="session")
def node_netns() -> Iterator[Path]:
    """The test node's network namespace (what SDC_NODE_NETNS names): its bridges, host veth
    ends and nft table live there, never in the host's own namespace."""
    reason = netns.missing_host()
    if reason is not None:
        pytest.skip(reason)
    where = netns.workdir("agents-node")
    try:
        yield netns.create(where / "node")
    finally:
        netns.remove_workdir(where)


def make_network(pool: LoopPool, node_netns: Path, state_dir: Path) -> NodeNetwork:
    """The node network of a test node; ``state_dir`` (overlay.json) is the test's own, so no
    test sees the peers another one set."""
    return NodeNetwork(TEST_NIC_TAGS, "vxlan", state_dir, netns_dir(pool.runc_root),
                       node_netns=node_netns)


def make_linux(pool: LoopPool, network: NodeNetwork | None = None,
               server_uuid: str | None = None,
               metadata_listener: MetadataListener | None = None,
               image_store_url: str = "") -> LinuxBackend:
    """A LinuxBackend on ``pool``; without ``network``, one whose node network is the host's
    (for tests of machines without NICs only)."""
    return LinuxBackend(server_uuid or str(uuid.uuid4()), "linux-test",
                        BtrfsStorage(pool.mount), runc_root=pool.runc_root, stop_timeout=5.0,
                        network=network, metadata_listener=metadata_listener,
                        image_store_url=image_store_url)


@pytest.fixture
def linux_backend(btrfs_pool: LoopPool, node_netns: Path, tmp_path: Path,
                  image_store_url: str) -> Iterator[LinuxBackend]:
    """A LinuxBackend on the session pool and node namespace, its image store
    ``image_server``; its machines are destroyed after the test."""
    backend = make_linux(btrfs_pool, make_network(btrfs_pool, node_netns, tmp_path / "network"),
                         image_store_url=image_store_url)
    try:
        yield backend
    finally:
        # a new agent reads the records from the pool: a test may have changed machines
        # through another LinuxBackend of the pool (an agent restart) behind this one's back
        fresh = make_linux(btrfs_pool, backend.network)
        for machine in fresh.list_machines():
            fresh.machine_destroy(machine["uuid"])


@pytest.fixture(name="node")
def linux_node(linux_backend: LinuxBackend, busybox_image: dict[str, Any]) -> LinuxBackend:
    """``linux_backend`` with the busybox image imported: the ``node`` of the Linux test
    modules (those of other backends define their own)."""
    linux_backend.image_ensure_present(busybox_image)
    return linux_backend


@pytest.fixture
def machine_spec(image_spec: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    """Build a loaded MachineSpecSchema dict of the test image; keywords override fields."""
    return spec_factory(image_spec["uuid"], alias="web0", ram_mb=256, disk_mb=1024)


def spec_factory(image_uuid: str, **defaults: Any) -> Callable[..., dict[str, Any]]:
    """A builder of loaded MachineSpecSchema dicts of ``image_uuid`` (a fresh uuid and owner
    each): ``defaults`` fill the other fields, the builder's keywords override them."""

    def build(**overrides: Any) -> dict[str, Any]:
        raw = {"uuid": str(uuid.uuid4()), "owner_uuid": str(uuid.uuid4()),
               "image_uuid": image_uuid, **defaults, **overrides}
        loaded: dict[str, Any] = MachineSpecSchema().load(raw)
        return loaded

    return build


@contextlib.contextmanager
def hosting(backend: NodeBackend) -> Iterator[NodeBackend]:
    """``backend`` served by the task registry, the registry as it was afterwards."""
    saved = dict(tasks.registry)
    tasks.host([backend])
    try:
        yield backend
    finally:
        tasks.registry.clear()
        tasks.registry.update(saved)


@pytest.fixture
def hosted(tmp_path: Path) -> Iterator[SimBackend]:
    """A sim node served by the task registry for the duration of the test (the task tests
    are about the task contract, not about backends, and use sim-only fault injection)."""
    backend = make_sim(tmp_path)
    with hosting(backend):
        yield backend


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


# -- the smartos backend on a recorded global zone ----------------------------------------------


@pytest.fixture
def smartos_host() -> Iterator[FakeSmartOS]:
    """Every host command of the test goes to a fake SmartOS global zone."""
    host = FakeSmartOS()
    with use_runner(host), use_streamer(host.stream):
        yield host


@pytest.fixture
def smartos_backend(smartos_host: FakeSmartOS, tmp_path: Path,
                    image_store_url: str) -> SmartOSBackend:
    return SmartOSBackend(str(uuid.uuid4()), tmp_path / "smartos",
                          image_store_url=image_store_url)
