"""The SmartOS backend's metadata, brands, inits and image manifests by contract (issue 12):
the exact vmadm create/update payloads and imgadm manifests it sends to the fake global zone
(smartos_host.py), which refuses what vmadm(8)/imgadm(8) refuse (non-string metadata values,
``stop -t`` for a zone that is not a docker zone, an image file that does not match)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from agents.backends.base import BackendError
from agents.backends.smartos import SmartOSBackend
from agents.backends.vmadm_boot import STOP_TIMEOUT_KEY
from agents.backends.vmadm_payloads import metadata_value
from schemas.agent import MachineMetadataUpdateSchema, MachineSpecSchema
from tests.unit.agents.smartos_host import FakeSmartOS, recorded

KEYS = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVbfqZ0oVd3Xf5w3x1JwT7bqzKc2m8cUQJ0Jz0n6M1B "
        "alice@laptop\n")


@pytest.fixture
def node(smartos_host: FakeSmartOS, tmp_path: Path, image_store_url: str) -> SmartOSBackend:
    return SmartOSBackend("44454c4c-4800-1034-804a-b2c04f354d32", tmp_path,
                          image_store_url=image_store_url)


def install(host: FakeSmartOS, **manifest: Any) -> str:
    """An image already in the fake zpool: the recorded manifest with ``manifest`` over it."""
    recorded_manifest = json.loads(recorded("imgadm-get.json"))["manifest"]
    image = {**recorded_manifest, "uuid": str(uuid.uuid4()), **manifest}
    host.images[image["uuid"]] = image
    return str(image["uuid"])


def spec(image_uuid: str, **fields: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = MachineSpecSchema().load({
        "uuid": str(uuid.uuid4()), "alias": "web0", "owner_uuid": str(uuid.uuid4()),
        "image_uuid": image_uuid, "ram_mb": 1024, "disk_mb": 10240, **fields})
    return loaded


def create_stdin(host: FakeSmartOS) -> dict[str, Any]:
    [payload] = [json.loads(data or b"") for argv, data in host.calls
                 if argv[:2] == ("vmadm", "create")]
    return payload


def update_stdins(host: FakeSmartOS, vm: str) -> list[dict[str, Any]]:
    return [json.loads(data or b"") for argv, data in host.calls
            if argv == ("vmadm", "update", vm)]


def init(**fields: Any) -> dict[str, Any]:
    return {"kind": "application", "env": [], "workdir": "/", "stop_signal": "SIGTERM",
            "stop_timeout": 30, **fields}


# -- customer metadata -------------------------------------------------------------------------


def test_metadata_values_are_strings_other_json_values_encoded() -> None:
    assert [metadata_value(v) for v in ("x", "", 1, 2.5, True, None, [1, "a"], {"a": {"b": 1}})
            ] == ["x", "", "1", "2.5", "true", "null", '[1,"a"]', '{"a":{"b":1}}']


def test_create_puts_the_customer_metadata_in_customer_metadata(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    image = install(smartos_host)
    metadata = {"root_authorized_keys": KEYS, "user-script": "#!/bin/sh\necho hi > /tmp/x\n",
                "user-data": '{"role": "web"}', "count": 3, "debug": False,
                "conf": {"port": 80}, "admin_pw": "s3cret"}
    wanted = spec(image, metadata=metadata, tags={"role": "web", "tier": 2, "live": True})
    node.machine_create(wanted)
    payload = create_stdin(smartos_host)
    assert payload["customer_metadata"] == {
        "root_authorized_keys": KEYS, "user-script": "#!/bin/sh\necho hi > /tmp/x\n",
        "user-data": '{"role": "web"}', "count": "3", "debug": "false",
        "conf": '{"port":80}'}
    # the metadata agent answers *_pw keys from internal_metadata (vmadm(8) customer_metadata)
    assert payload["internal_metadata"] == {"admin_pw": "s3cret"}
    # tags keep their JSON types (vmadm tags take strings, numbers and booleans)
    assert payload["tags"] == {"role": "web", "tier": 2, "live": True}
    # no init: the brand's own; nothing of an init in the payload
    assert payload["brand"] == "joyent-minimal"
    assert not {"init_name", "docker", "kernel_version"} & payload.keys()
    # the head node sees one customer map again
    after = node.machine_update_metadata(
        MachineMetadataUpdateSchema().load({"uuid": wanted["uuid"]}))
    assert after["customer_metadata"] == {**payload["customer_metadata"], "admin_pw": "s3cret"}


def test_empty_metadata_is_an_empty_customer_map(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    image = install(smartos_host)
    wanted = spec(image)
    node.machine_create(wanted)
    payload = create_stdin(smartos_host)
    assert (payload["customer_metadata"], payload["tags"]) == ({}, {})
    assert "internal_metadata" not in payload
    assert node.machine_update_metadata(MachineMetadataUpdateSchema().load(
        {"uuid": wanted["uuid"]})) == {"tags": {}, "customer_metadata": {}}


def test_metadata_update_sets_and_removes_with_vmadm_update(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    image = install(smartos_host)
    wanted = spec(image, metadata={"user-script": "old", "db_pw": "a"}, tags={"role": "web"})
    vm = wanted["uuid"]
    node.machine_create(wanted)
    smartos_host.calls.clear()
    after = node.machine_update_metadata(MachineMetadataUpdateSchema().load({
        "uuid": vm, "set_customer_metadata": {"root_authorized_keys": KEYS, "api_pw": "b"},
        "remove_customer_metadata": ["user-script", "db_pw", "never-set"],
        "set_tags": {"env": "prod"}, "remove_tags": ["absent"]}))
    assert update_stdins(smartos_host, vm) == [{
        "set_customer_metadata": {"root_authorized_keys": KEYS},
        "remove_customer_metadata": ["user-script", "never-set"],
        "set_internal_metadata": {"api_pw": "b"},
        "remove_internal_metadata": ["db_pw"],
        "set_tags": {"env": "prod"}, "remove_tags": ["absent"]}]
    # SmartOS keeps no metadata serial: the answer has none, the contract allows that
    assert after == {"tags": {"role": "web", "env": "prod"},
                     "customer_metadata": {"root_authorized_keys": KEYS, "api_pw": "b"}}
    assert smartos_host.vms[vm]["internal_metadata"] == {"api_pw": "b"}


def test_removing_only_absent_keys_still_answers_the_zone_values(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    image = install(smartos_host)
    wanted = spec(image, metadata={"a": "1"})
    node.machine_create(wanted)
    after = node.machine_update_metadata(MachineMetadataUpdateSchema().load(
        {"uuid": wanted["uuid"], "remove_customer_metadata": ["gone"]}))
    assert update_stdins(smartos_host, wanted["uuid"]) == [
        {"remove_customer_metadata": ["gone"]}]
    assert after == {"tags": {}, "customer_metadata": {"a": "1"}}


# -- brands and inits -----------------------------------------------------------------------------


LX_TAGS = {"default_user": "debian", "kernel_version": "5.10.0"}


def test_an_lx_os_image_boots_its_init_as_init_name(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    image = install(smartos_host, type="lx-dataset", os="linux", tags=LX_TAGS)
    node.machine_create(spec(image, init=init(kind="os", args=["/usr/sbin/sdc-init"])))
    payload = create_stdin(smartos_host)
    assert {k: payload[k] for k in ("brand", "kernel_version", "init_name")} == {
        "brand": "lx", "kernel_version": "5.10.0", "init_name": "/usr/sbin/sdc-init"}
    assert not {"docker", "internal_metadata"} & payload.keys()


def test_an_lx_image_without_init_boots_the_brands_own(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    image = install(smartos_host, type="lx-dataset", os="linux", tags=LX_TAGS)
    node.machine_create(spec(image))
    payload = create_stdin(smartos_host)
    # kernel_version always: vmadm requires it for lx (an image without it: test_vmadm_contract)
    assert (payload["brand"], payload["kernel_version"]) == ("lx", "5.10.0")
    assert not {"init_name", "docker"} & payload.keys()


def test_a_joyent_zone_ignores_an_os_init(node: SmartOSBackend, smartos_host: FakeSmartOS
                                          ) -> None:
    image = install(smartos_host)  # zone-dataset, smartos
    node.machine_create(spec(image, init=init(kind="os", args=["/sbin/init"])))
    payload = create_stdin(smartos_host)
    assert payload["brand"] == "joyent-minimal"
    assert not {"init_name", "docker", "kernel_version"} & payload.keys()


@pytest.mark.parametrize("extra", [
    {"args": ["/sbin/init", "--verbose"]},
    {"env": ["LANG=C"]},
    {"workdir": "/srv"},
    {"args": ["sdc-init"]},
])
def test_an_lx_os_init_init_name_cannot_carry_is_refused(
    node: SmartOSBackend, smartos_host: FakeSmartOS, extra: dict[str, Any]
) -> None:
    image = install(smartos_host, type="lx-dataset", os="linux", tags=LX_TAGS)
    with pytest.raises(BackendError) as exc:
        node.machine_create(spec(image, init=init(**{"kind": "os", "args": ["/sbin/init"],
                                                     **extra})))
    assert exc.value.code == "InitNotSupported"
    assert "init_name" in exc.value.message
    assert not [a for a in smartos_host.argvs("vmadm") if a[1] == "create"]


def test_an_application_init_is_a_docker_zone(node: SmartOSBackend, smartos_host: FakeSmartOS
                                              ) -> None:
    image = install(smartos_host, type="lx-dataset", os="linux", tags=LX_TAGS)
    wanted = spec(image, metadata={"user-data": "x"}, init=init(
        args=["/usr/bin/redis-server", "--port", "6379"], env=["A=1", "B=two words"],
        workdir="/data", stop_timeout=45))
    node.machine_create(wanted)
    payload = create_stdin(smartos_host)
    internal = payload["internal_metadata"]
    assert len(internal.pop("docker:id")) == 64
    assert {k: payload[k] for k in ("brand", "docker", "init_name", "restart_init",
                                    "internal_metadata_namespaces")} == {
        "brand": "lx", "docker": True, "init_name": "/native/usr/vm/sbin/dockerinit",
        "restart_init": False, "internal_metadata_namespaces": ["docker"]}
    assert internal == {
        "docker:entrypoint": '["/usr/bin/redis-server", "--port", "6379"]',
        "docker:env": '["A=1", "B=two words"]', "docker:workdir": "/data",
        STOP_TIMEOUT_KEY: "45"}
    assert json.loads(internal["docker:entrypoint"]) == wanted["init"]["args"]
    assert payload["customer_metadata"] == {"user-data": "x"}
    # a stop gives the init its stop_timeout between vmadm's SIGTERM and the halt
    smartos_host.calls.clear()
    assert node.machine_stop(wanted["uuid"])["state"] == "stopped"
    assert [a for a in smartos_host.argvs("vmadm") if a[1] == "stop"] == [
        ("vmadm", "stop", wanted["uuid"], "-t", "45")]
    # internal metadata is not the customer's: the answer shows none of it
    assert node.machine_update_metadata(MachineMetadataUpdateSchema().load(
        {"uuid": wanted["uuid"]}))["customer_metadata"] == {"user-data": "x"}


def test_a_zone_that_is_not_docker_is_stopped_without_a_timeout(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    image = install(smartos_host, type="lx-dataset", os="linux", tags=LX_TAGS)
    wanted = spec(image, init=init(kind="os", args=["/usr/sbin/sdc-init"]))
    node.machine_create(wanted)
    smartos_host.calls.clear()
    node.machine_stop(wanted["uuid"])
    assert [a for a in smartos_host.argvs("vmadm") if a[1] == "stop"] == [
        ("vmadm", "stop", wanted["uuid"])]


def test_an_application_init_in_a_joyent_zone_uses_the_native_dockerinit(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    image = install(smartos_host)
    node.machine_create(spec(image, init=init(args=["/opt/local/bin/app"])))
    payload = create_stdin(smartos_host)
    assert (payload["brand"], payload["init_name"]) == ("joyent-minimal",
                                                        "/usr/vm/sbin/dockerinit")


def test_a_stop_signal_vmadm_cannot_send_is_refused(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    image = install(smartos_host, type="lx-dataset", os="linux", tags=LX_TAGS)
    with pytest.raises(BackendError) as exc:
        node.machine_create(spec(image, init=init(args=["/app"], stop_signal="SIGINT")))
    assert exc.value.code == "InitNotSupported"
    assert "SIGINT" in exc.value.message
    assert not [a for a in smartos_host.argvs("vmadm") if a[1] == "create"]


@pytest.mark.parametrize(("manifest", "brand"), [
    ({"type": "docker", "os": "linux", "tags": LX_TAGS}, "lx"),
    ({"type": "lx-dataset", "requirements": {"brand": "lx"}, "tags": LX_TAGS}, "lx"),
    ({"type": "zone-dataset", "requirements": {"brand": "joyent"}}, "joyent"),
    ({"type": "zone-dataset"}, "joyent-minimal"),
])
def test_the_brand_comes_from_the_installed_manifest(
    node: SmartOSBackend, smartos_host: FakeSmartOS, manifest: dict[str, Any], brand: str
) -> None:
    node.machine_create(spec(install(smartos_host, **manifest)))
    assert create_stdin(smartos_host)["brand"] == brand


@pytest.mark.parametrize("manifest", [
    {"type": "zvol", "os": "linux"},
    {"type": "zone-dataset", "requirements": {"brand": "bhyve"}},
    {"type": "zone-dataset", "requirements": {"brand": "solaris10"}},
    {"type": "other"},  # no vmadm brand takes it as a zone root
])
def test_an_image_this_backend_cannot_boot_is_refused_before_vmadm(
    node: SmartOSBackend, smartos_host: FakeSmartOS, manifest: dict[str, Any]
) -> None:
    with pytest.raises(BackendError) as exc:
        node.machine_create(spec(install(smartos_host, **manifest)))
    assert exc.value.code == "UnsupportedImage"
    assert not [a for a in smartos_host.argvs("vmadm") if a[1] == "create"]


# -- images --------------------------------------------------------------------------------------


def test_the_installed_manifest_carries_the_image_tags_and_requirements(
    node: SmartOSBackend, smartos_host: FakeSmartOS, zfs_stream_image: dict[str, Any]
) -> None:
    image = {**zfs_stream_image, "type": "lx-dataset", "os": "linux", "tags": LX_TAGS,
             "requirements": {"brand": "lx", "networks": [{"name": "net0"}]},
             "init": init(kind="os", args=["/usr/sbin/sdc-init"])}
    node.image_ensure_present(image)
    manifest = smartos_host.images[image["uuid"]]  # what imgadm read from the -m file
    file = zfs_stream_image["files"][0]
    assert manifest == {
        "v": 2, "uuid": image["uuid"], "name": "busybox", "version": "1.35",
        "type": "lx-dataset", "os": "linux", "state": "active", "disabled": False,
        "public": False,
        "files": [{"sha1": manifest["files"][0]["sha1"], "size": file["size"],
                   "compression": "gzip"}],
        "requirements": {"brand": "lx", "networks": [{"name": "net0"}]},
        "tags": {"default_user": "debian", "kernel_version": "5.10.0"}}
    # a machine of it is an lx zone with the manifest's kernel version
    node.machine_create(spec(image["uuid"]))
    payload = create_stdin(smartos_host)
    assert (payload["brand"], payload["kernel_version"]) == ("lx", "5.10.0")


def test_a_manifest_without_tags_or_requirements_has_neither(
    node: SmartOSBackend, smartos_host: FakeSmartOS, zfs_stream_image: dict[str, Any]
) -> None:
    node.image_ensure_present(zfs_stream_image)
    assert not {"tags", "requirements"} & smartos_host.images[zfs_stream_image["uuid"]].keys()


def test_an_image_not_installed_is_imgadm_exit_3(smartos_host: FakeSmartOS) -> None:
    from agents.backends.host import imgadm

    assert imgadm.get(str(uuid.uuid4())) is None
    [(argv, _)] = smartos_host.calls
    assert argv[:2] == ("imgadm", "get")
