"""Every vmadm payload the SmartOS backend sends, checked against vmadm's own property table.

The table is ``data/smartos/vmadm_properties.json``: vmadm's property facts (type, minimum and
maximum, the brands and actions that allow each property, the ones a brand requires, the image
types each brand takes as its zone root) transcribed by hand from smartos-live's
``src/vm/node_modules/proptable.js`` at the commit its ``source`` names, with what VM.js's
``validate()`` makes of them (``rules``, at VM.js's own commit). Nothing here parses
smartos-live; the fixture is the contract, and it can be wrong where the transcription is.

The payloads are not written here: the backend builds them (its own payload functions, called
by :class:`SmartOSBackend` against the fake global zone, ``smartos_host.py``) and the fake's
recorded ``vmadm create`` / ``vmadm update`` stdins are checked, for each brand the backend may
choose: joyent-minimal and joyent zones, lx zones with their ``kernel_version``, docker zones
for application inits; with several NICs (allow_* flags, VLAN, MTU, allowed_ips), resolvers,
routes, customer metadata (root_authorized_keys, user-script, ``*_pw`` keys), tags; then a
resize and rename, a metadata change, NICs added, changed and removed.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from agents.backends.base import BackendError
from agents.backends.smartos import SmartOSBackend
from agents.backends.vmadm_boot import BRAND_IMAGE_TYPES, DOCKERINIT
from agents.backends.vmadm_payloads import ZONE_TYPES
from schemas.agent import (
    MachineMetadataUpdateSchema,
    MachineSpecSchema,
    MachineUpdateSchema,
)
from schemas.nics import NicFlagsSchema, NicSpecSchema
from tests.unit.agents.smartos_host import DATA, FakeSmartOS, recorded

TABLE: dict[str, Any] = json.loads((DATA / "vmadm_properties.json").read_text())
PROPERTIES: dict[str, dict[str, Any]] = TABLE["properties"]
BRANDS: dict[str, dict[str, Any]] = TABLE["brands"]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", re.I)
KEYS = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVbfqZ0oVd3Xf5w3x1JwT7bqzKc2m8cUQJ0Jz0n6M1B a@b\n"
LX_TAGS = {"role": "os", "kernel_version": "4.3.0"}


# -- the checker: what VM.js validate() does with the table ------------------------------------


def required(brand: str, action: str) -> set[str]:
    return {name for name, prop in PROPERTIES.items()
            if action in (prop.get("required") or {}).get(brand, [])}


def _ip_or_cidr(text: str) -> bool:
    address, _, bits = text.partition("/")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not bits or (bits.isdigit() and 1 <= int(bits) <= parsed.max_prefixlen)


def _validator_problem(name: str, value: Any) -> str | None:
    validator = PROPERTIES[name].get("validator")
    if validator == "utils.validMacAddress" and not MAC.match(str(value)):
        return f"{name}: {value!r} is not a MAC address"
    if validator == "utils.validResolver":
        for item in value:
            try:
                ipaddress.ip_address(item)
            except ValueError:
                return f"{name}: {item!r} is not an IP address"
    if name == "nics.*.allowed_ips":
        limits = TABLE["rules"]["allowed_ips"]
        if len(value) > limits["max_items"]:
            return f"{name}: {len(value)} entries, at most {limits['max_items']}"
        bad = [item for item in value if not _ip_or_cidr(str(item))]
        if bad:
            return f"{name}: {bad} are not addresses or CIDRs"
    return None


def _type_problem(name: str, value: Any) -> str | None:
    prop = PROPERTIES[name]
    kind = prop["type"]
    scalar = (str, int, float, bool)
    ok = {
        "uuid": lambda v: isinstance(v, str) and bool(UUID.match(v)),
        "boolean": lambda v: isinstance(v, bool),
        "string": lambda v: v is None or isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "flat-object": lambda v: isinstance(v, dict) and all(
            isinstance(x, scalar) for x in v.values()),
        "list": lambda v: isinstance(v, list) and all(
            isinstance(x, (str, int)) and not isinstance(x, bool) and "," not in str(x)
            for x in v),
        "object-array": lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
    }[kind](value)
    if not ok:
        return f"{name}: {value!r} is not a valid {kind}"
    if kind == "integer" and not prop.get("min", value) <= value <= prop.get("max", value):
        return f"{name}: {value} is outside [{prop.get('min')}, {prop.get('max')}]"
    return _validator_problem(name, value)


def _property_problems(name: str, value: Any, brand: str, action: str) -> list[str]:
    prop = PROPERTIES.get(name)
    if prop is None:
        return [f"{name}: not in vmadm's property table"]
    if action not in prop["allowed"].get(brand, []):
        return [f"{name}: not allowed for brand {brand} on {action}"]
    found = _type_problem(name, value)
    return [found] if found else []


def problems(payload: dict[str, Any], brand: str, action: str,
             image_type: str | None = None) -> list[str]:
    """What vmadm would refuse in ``payload`` for ``brand`` and ``action`` ("create" or
    "update"): keys it does not allow there, values of the wrong type or out of range, NIC
    entries checked as ``nics.*.KEY`` (action "add" for nics and add_nics, "update" for
    update_nics), the brand's required keys and the image type its zone root takes."""
    assert brand in BRANDS, f"brand {brand} is not in the table"
    found: list[str] = []
    for name, value in payload.items():
        found += _property_problems(name, value, brand, action)
        prop = PROPERTIES.get(name) or {}
        if prop.get("type") == "object-array" and isinstance(value, list):
            prefix = prop.get("check_as", name)
            entry_action = "update" if name.startswith("update_") else "add"
            for entry in value:
                for key, item in (entry if isinstance(entry, dict) else {}).items():
                    found += _property_problems(f"{prefix}.*.{key}", item, brand, entry_action)
    if action == "create":
        found += [f"{name}: required for brand {brand}"
                  for name in sorted(required(brand, action) - payload.keys())]
        if image_type not in BRANDS[brand]["zoneroot_image_types"]:
            found.append(f"image type {image_type} is not a zone root brand {brand} takes "
                         f"({BRANDS[brand]['zoneroot_image_types']})")
    return found


def test_the_table_names_the_smartos_live_commit_it_was_read_at() -> None:
    source = TABLE["source"]
    assert source["repository"] == "TritonDataCenter/smartos-live"
    assert source["proptable"]["path"] == "src/vm/node_modules/proptable.js"
    assert re.fullmatch(r"[0-9a-f]{40}", source["proptable"]["commit"])
    assert "by hand" in source["made"].lower()
    # what the rest of this module leans on
    assert required("lx", "create") == {"brand", "image_uuid", "kernel_version"}
    assert required("joyent-minimal", "create") == {"brand", "image_uuid"}


@pytest.mark.parametrize(("payload", "brand", "action", "wanted"), [
    ({"docker": True}, "joyent", "update", "docker: not allowed for brand joyent"),
    ({"vcpus": 2}, "lx", "update", "vcpus: not allowed for brand lx"),
    ({"tags": {"a": "b"}}, "lx", "update", "tags: not allowed for brand lx on update"),
    ({"max_swap": 128}, "lx", "update", "max_swap: 128 is outside"),
    ({"max_lwps": True}, "lx", "update", "max_lwps: True is not a valid integer"),
    ({"quota": "10"}, "lx", "update", "quota: '10' is not a valid integer"),
    ({"customer_metadata": {"a": [1]}}, "lx", "create", "not a valid flat-object"),
    ({"resolvers": ["8.8.8.8,1.1.1.1"]}, "lx", "update", "resolvers"),
    ({"add_nics": [{"vlan_id": 4096}]}, "lx", "update", "nics.*.vlan_id: 4096 is outside"),
    ({"update_nics": [{"mtu": 500}]}, "lx", "update", "nics.*.mtu: 500 is outside"),
    ({"add_nics": [{"mac": "90:b8:d0:0:0"}]}, "lx", "update", "not a MAC address"),
    ({"add_nics": [{"model": "virtio"}]}, "lx", "update", "nics.*.model: not allowed"),
    ({"add_nics": [{"allowed_ips": [f"10.0.0.{i}" for i in range(14)]}]}, "lx", "update",
     "14 entries, at most 13"),
    ({"add_nics": [{"network_uuid": "net-1"}]}, "lx", "update", "not a valid uuid"),
    ({"brand": "lx", "image_uuid": str(uuid.uuid4())}, "lx", "create",
     "kernel_version: required for brand lx"),
    ({"brand": "lx", "image_uuid": str(uuid.uuid4()), "kernel_version": "4.3.0"}, "lx",
     "create", "image type zone-dataset is not a zone root brand lx takes"),
    ({"init_name": "/sbin/init"}, "kvm", "update", "init_name: not allowed for brand kvm"),
])
def test_the_checker_finds_what_vmadm_refuses(payload: dict[str, Any], brand: str,
                                              action: str, wanted: str) -> None:
    """The checker is not vacuous: each of these payloads breaks one fact of the table."""
    found = problems(payload, brand, action, image_type="zone-dataset")
    assert any(wanted in problem for problem in found), found


# -- the backend's own tables agree with vmadm's -----------------------------------------------


def test_the_backends_brands_take_the_image_types_vmadm_gives_them() -> None:
    for brand, types in BRAND_IMAGE_TYPES.items():
        assert brand in BRANDS, brand
        assert set(types) == set(BRANDS[brand]["zoneroot_image_types"]), brand
    # what a node says it runs as zones is what those brands take, nothing else
    assert set(ZONE_TYPES) == {t for types in BRAND_IMAGE_TYPES.values() for t in types}


def test_dockerinit_is_where_vmadm_keeps_it_for_each_brand_that_has_one() -> None:
    vmadms = {brand: feats["dockerinit"] for brand, feats in BRANDS.items()
              if "dockerinit" in feats}
    assert vmadms == DOCKERINIT
    # vmadm takes the docker flag on exactly the brands with a dockerinit
    assert set(PROPERTIES["docker"]["allowed"]) == set(DOCKERINIT)


# -- what the backend sends --------------------------------------------------------------------


def nic(index: int, **fields: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = NicSpecSchema().load({
        "mac": f"90:b8:d0:00:00:{index:02x}", "interface": f"net{index}",
        "nic_tag": "external", "ips": [f"10.88.{index}.10/24"],
        "network_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"net{index}")), **fields})
    return loaded


NICS = [
    nic(0, primary=True, gateways=["10.88.0.1"], mtu=1500),
    nic(1, nic_tag="internal", vlan_id=4094, mtu=9000, allow_ip_spoofing=True,
        allow_mac_spoofing=True, allow_dhcp_spoofing=True, allow_restricted_traffic=True,
        allowed_ips=["10.89.0.0/16", "192.168.7.7"] + [f"10.90.0.{i}" for i in range(11)]),
    nic(2, nic_tag="sdc_overlay", vlan_id=0, mtu=8500, ips=[], allow_ip_spoofing=True),
]
METADATA = {"root_authorized_keys": KEYS, "user-script": "#!/bin/sh\ntouch /var/tmp/x\n",
            "user-data": "a,b", "port": 8080, "debug": False, "conf": {"a": [1]},
            "admin_pw": "s3cret"}


def application(**fields: Any) -> dict[str, Any]:
    return {"kind": "application", "args": ["/usr/bin/redis-server", "--port", "6379"],
            "env": ["A=1"], "workdir": "/data", "stop_signal": "SIGTERM", "stop_timeout": 40,
            **fields}


OS_INIT = {"kind": "os", "args": ["/usr/sbin/sdc-init"]}
#: (case, installed manifest over the recorded one, node's joyent brand, init, brand vmadm gets)
CREATES = [
    ("joyent-minimal zone", {}, "joyent-minimal", None, "joyent-minimal"),
    ("joyent zone, os init ignored", {}, "joyent", OS_INIT, "joyent"),
    ("joyent zone by requirements.brand", {"requirements": {"brand": "joyent"}},
     "joyent-minimal", None, "joyent"),
    ("joyent-minimal docker zone", {}, "joyent-minimal", application(), "joyent-minimal"),
    ("lx zone", {"type": "lx-dataset", "os": "linux", "tags": LX_TAGS}, "joyent-minimal",
     None, "lx"),
    ("lx zone with its os init", {"type": "lx-dataset", "os": "linux", "tags": LX_TAGS,
                                  "requirements": {"brand": "lx"}},
     "joyent-minimal", OS_INIT, "lx"),
    ("lx docker zone", {"type": "lx-dataset", "os": "linux", "tags": LX_TAGS},
     "joyent-minimal", application(env=[], workdir="/"), "lx"),
    ("docker image", {"type": "docker", "os": "linux", "tags": LX_TAGS}, "joyent-minimal",
     application(), "lx"),
]


def install(host: FakeSmartOS, **manifest: Any) -> dict[str, Any]:
    image = {**json.loads(recorded("imgadm-get.json"))["manifest"], "uuid": str(uuid.uuid4()),
             **manifest}
    host.images[image["uuid"]] = image
    return image


def spec(image_uuid: str, init: dict[str, Any] | None) -> dict[str, Any]:
    loaded: dict[str, Any] = MachineSpecSchema().load({
        "uuid": str(uuid.uuid4()), "alias": "web0", "owner_uuid": str(uuid.uuid4()),
        "image_uuid": image_uuid, "ram_mb": 128, "disk_mb": 1, "cpu_cap": 350,
        "max_lwps": 2000, "tags": {"role": "web", "tier": 2, "live": True},
        "metadata": METADATA, "init": init, "nics": NICS[:2],
        "resolvers": ["8.8.8.8", "1.1.1.1"],
        "routes": {"10.99.0.0/16": "10.88.0.1", "172.16.5.5": "10.88.0.1"}})
    return loaded


def sent(host: FakeSmartOS, command: str) -> list[dict[str, Any]]:
    return [json.loads(data or b"") for argv, data in host.calls if argv[1:2] == (command,)
            and argv[0] == "vmadm"]


def updates_of_a_machine(node: SmartOSBackend, vm: str) -> None:
    """Every update the backend makes to an existing machine."""
    node.machine_update(MachineUpdateSchema().load(
        {"uuid": vm, "alias": "web1", "ram_mb": 4096, "disk_mb": 40961, "cpu_cap": 0,
         "max_lwps": 3000, "vcpus": 4}))
    node.machine_update(MachineUpdateSchema().load({"uuid": vm, "ram_mb": 64}))
    node.machine_update_metadata(MachineMetadataUpdateSchema().load({
        "uuid": vm, "set_customer_metadata": {"user-script": "#!/bin/sh\n", "db_pw": "x"},
        "remove_customer_metadata": ["user-data", "admin_pw"],
        "set_tags": {"tier": 3, "env": "prod", "live": False}, "remove_tags": ["role"]}))
    node.machine_add_nics(vm, [NICS[2]], {"10.100.0.0/16": "10.88.0.1"})
    node.machine_update_nics(vm, [
        NicFlagsSchema().load({"mac": NICS[1]["mac"], "allow_ip_spoofing": False,
                               "allowed_ips": ["10.89.0.0/16"]}),
        NicFlagsSchema().load({"mac": NICS[2]["mac"], "allow_mac_spoofing": True,
                               "allow_dhcp_spoofing": False,
                               "allow_restricted_traffic": True})])
    node.machine_remove_nics(vm, [NICS[0]["mac"], NICS[2]["mac"]])


@pytest.mark.parametrize(("manifest", "node_brand", "init", "brand"),
                         [case[1:] for case in CREATES], ids=[case[0] for case in CREATES])
def test_every_payload_passes_vmadms_table(
    smartos_host: FakeSmartOS, tmp_path: Path, manifest: dict[str, Any], node_brand: str,
    init: dict[str, Any] | None, brand: str
) -> None:
    node = SmartOSBackend(str(uuid.uuid4()), tmp_path, brand=node_brand)
    image = install(smartos_host, **manifest)
    wanted = spec(image["uuid"], init)
    node.machine_create(wanted)
    [created] = sent(smartos_host, "create")
    assert created["brand"] == brand
    assert problems(created, brand, "create", image["type"]) == []
    # what networking and metadata add is there, not dropped to pass
    assert {"nics", "resolvers", "routes", "customer_metadata", "internal_metadata",
            "tags"} <= created.keys()
    assert created["internal_metadata"]["admin_pw"] == "s3cret"
    if init is not None and init["kind"] == "application":
        assert created["docker"] is True
    updates_of_a_machine(node, wanted["uuid"])
    changes = sent(smartos_host, "update")
    assert {key for change in changes for key in change} == {
        "alias", "max_physical_memory", "max_locked_memory", "max_swap", "quota", "cpu_cap",
        "max_lwps", "set_customer_metadata", "remove_customer_metadata",
        "set_internal_metadata", "remove_internal_metadata", "set_tags", "remove_tags",
        "add_nics", "set_routes", "update_nics", "remove_nics"}
    assert [problem for change in changes for problem in problems(change, brand, "update")
            ] == []


# -- what the backend refuses before vmadm would ------------------------------------------------


@pytest.mark.parametrize(("manifest", "init", "code", "named"), [
    # VM.js requires kernel_version for lx; IMGAPI lx images carry it as tags.kernel_version
    ({"type": "lx-dataset", "os": "linux", "tags": {"role": "os"}}, None,
     "UnsupportedImage", "tags.kernel_version"),
    ({"type": "docker", "os": "linux"}, application(), "UnsupportedImage",
     "tags.kernel_version"),
    # zone roots: joyent brands take zone-dataset, lx takes lx-dataset and docker
    ({"type": "other"}, None, "UnsupportedImage", "other"),
    ({"type": "zone-dataset", "requirements": {"brand": "lx"}, "tags": LX_TAGS}, None,
     "UnsupportedImage", "zone-dataset"),
    ({"type": "lx-dataset", "requirements": {"brand": "joyent-minimal"}}, None,
     "UnsupportedImage", "lx-dataset"),
    # a brand the table does not know
    ({"requirements": {"brand": "builder"}}, None, "UnsupportedImage", "builder"),
    # vmadm takes docker (and has a dockerinit) for joyent-minimal and lx, not joyent
    ({"requirements": {"brand": "joyent"}}, application(), "InitNotSupported", "joyent"),
])
def test_what_vmadm_would_refuse_is_refused_before_it_runs(
    smartos_host: FakeSmartOS, tmp_path: Path, manifest: dict[str, Any],
    init: dict[str, Any] | None, code: str, named: str
) -> None:
    node = SmartOSBackend(str(uuid.uuid4()), tmp_path)
    image = install(smartos_host, **manifest)
    with pytest.raises(BackendError) as exc:
        node.machine_create(spec(image["uuid"], init))
    assert exc.value.code == code
    assert named in exc.value.message
    assert sent(smartos_host, "create") == []


def test_a_key_vmadm_could_never_remove_is_refused(smartos_host: FakeSmartOS,
                                                    tmp_path: Path) -> None:
    """vmadm removes keys with list properties (remove_customer_metadata, remove_tags), whose
    values cannot hold a comma: a key with one could be set but never removed again."""
    node = SmartOSBackend(str(uuid.uuid4()), tmp_path)
    image = install(smartos_host)
    assert problems({"remove_tags": ["a,b"]}, "joyent-minimal", "update") != []
    wanted = {**spec(image["uuid"], None), "metadata": {"a,b": "1"}}
    with pytest.raises(BackendError) as exc:
        node.machine_create(wanted)
    assert (exc.value.code, "'a,b'" in exc.value.message) == ("InvalidParams", True)
    assert sent(smartos_host, "create") == []
    node.machine_create({**wanted, "metadata": {}, "tags": {}})
    for change in ({"set_tags": {"x,y": 1}}, {"remove_customer_metadata": ["k,v"]},
                   {"set_customer_metadata": {"p,q_pw": "s"}}, {"remove_tags": ["t,u"]}):
        with pytest.raises(BackendError) as exc:
            node.machine_update_metadata(MachineMetadataUpdateSchema().load(
                {"uuid": wanted["uuid"], **change}))
        assert exc.value.code == "InvalidParams" and "," in exc.value.message
    assert sent(smartos_host, "update") == []
