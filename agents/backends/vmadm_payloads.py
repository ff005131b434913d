"""What the SmartOS backend tells ``vmadm`` and reads from ``sysinfo``, as pure functions:
the create, update and metadata payloads (vmadm's property names), a NIC in vmadm's form,
the image manifest ``imgadm install`` takes, and the node facts (image types it runs as
zones, nic tags and their uplinks) read from sysinfo. Tested by exact payloads.

Customer metadata (``root_authorized_keys``, ``user-script``, ``user-data`` and the tenant's
keys) goes to vmadm's ``customer_metadata``, whose values are strings: a value of another
JSON type is sent JSON-encoded (compact, as JSON.stringify writes it). Keys ending in ``_pw``
go to ``internal_metadata`` instead: vmadm(8) says not to put them in customer_metadata, and
the metadata agent serves them to the guest from internal_metadata. Answers merge them back,
so the head node sees one customer map.

vmadm removes metadata and tag keys with list properties (``remove_customer_metadata``,
``remove_tags``), whose values VM.js's validate() refuses when they hold a comma: a key with a
comma could be set but never removed, so it is refused (``InvalidParams``) before vmadm runs."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agents.backends.base import BackendError
from schemas.nics import NIC_FLAG_FIELDS, SPOOF_FLAGS

GIB_MB = 1024
#: image types every SmartOS node runs as zones (joyent, lx and docker brands: the zone roots
#: vmadm takes, vmadm_boot.BRAND_IMAGE_TYPES; no brand takes ``other``); a zvol needs hardware
#: virtualization (bhyve or kvm), which sysinfo reports
ZONE_TYPES = ("zone-dataset", "lx-dataset", "docker")
#: vmadm's floor for max_swap (MiB)
MIN_SWAP_MB = 256
INTERFACE = re.compile(r"^net([0-9]+)$")
#: customer keys the metadata agent reads from internal_metadata (vmadm(8) customer_metadata)
PW_SUFFIX = "_pw"


def runs_types(node: dict[str, Any]) -> list[str]:
    """The image types this node runs, from its sysinfo (sysinfo(8): "Bhyve Capable",
    "VM Capable")."""
    hvm = bool(node.get("Bhyve Capable") or node.get("VM Capable"))
    return [*ZONE_TYPES, "zvol"] if hvm else list(ZONE_TYPES)


def nic_tag_uplinks(node: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """Which link provides each nic tag, and the node's address there, from sysinfo(8):
    physical links and aggregations ("Network Interfaces") list their tags in "NIC Names"
    and their own address in "ip4addr" ("" for none); Triton's underlay VNIC
    ("Virtual Network Interfaces", sdc_underlay0) lists the overlay tags it carries in
    "Overlay Nic Tags". The first link naming a tag wins, in name order."""
    uplinks: dict[str, dict[str, str | None]] = {}
    sources = (("Network Interfaces", "NIC Names"),
               ("Virtual Network Interfaces", "Overlay Nic Tags"))
    for section, tags_key in sources:
        for link, info in sorted((node.get(section) or {}).items()):
            for tag in info.get(tags_key) or []:
                uplinks.setdefault(tag, {"link": link, "underlay": info.get("ip4addr") or None})
    return uplinks


def vmadm_nic(nic: dict[str, Any]) -> dict[str, Any]:
    """A NicSpecSchema dict as a vmadm NIC object (vmadm(8) ``nics.*``): ``primary`` only
    when true (the only value vmadm takes), optional lists and the allow_* flags (all
    default false) only when set."""
    out: dict[str, Any] = {"mac": nic["mac"], "interface": nic["interface"],
                           "nic_tag": nic["nic_tag"], "vlan_id": nic.get("vlan_id", 0),
                           "ips": list(nic.get("ips") or []), "mtu": nic.get("mtu", 1500)}
    if nic.get("gateways"):
        out["gateways"] = list(nic["gateways"])
    if nic.get("primary"):
        out["primary"] = True
    if nic.get("network_uuid"):
        out["network_uuid"] = nic["network_uuid"]
    out.update({flag: True for flag in SPOOF_FLAGS if nic.get(flag)})
    if nic.get("allowed_ips"):
        out["allowed_ips"] = list(nic["allowed_ips"])
    return out


def vmadm_nic_change(change: dict[str, Any]) -> dict[str, Any]:
    """One ``update_nics`` entry: the mac and the fields the change sets (None: unchanged)."""
    return {"mac": change["mac"],
            **{key: change[key] for key in NIC_FLAG_FIELDS if change.get(key) is not None}}


def nic_summary(nics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """MachineStatus ``nics``: mac and interface of each, in interface (netN) order; NICs
    without one (vmadm names only OS zones' NICs) keep vmadm's order, after the others."""
    def position(nic: dict[str, Any]) -> int:
        found = INTERFACE.match(str(nic.get("interface") or ""))
        return int(found.group(1)) if found else 1 << 16

    return [{"mac": nic["mac"], "interface": nic.get("interface") or ""}
            for nic in sorted(nics, key=position)]


def metadata_value(value: Any) -> str:
    """A customer metadata value as vmadm keeps it: strings as they are, any other JSON value
    encoded."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def split_metadata(metadata: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Customer metadata as (customer_metadata, internal_metadata): ``*_pw`` keys go to the
    latter, where the metadata agent looks them up."""
    customer: dict[str, str] = {}
    internal: dict[str, str] = {}
    for key, value in metadata.items():
        (internal if key.endswith(PW_SUFFIX) else customer)[key] = metadata_value(value)
    return customer, internal


def removable_keys(kind: str, keys: Iterable[str]) -> None:
    """Refuse ``kind`` keys holding a comma: vmadm's update lists could never remove them."""
    bad = sorted(key for key in keys if "," in key)
    if bad:
        raise BackendError("InvalidParams",
                           f"{kind} keys {', '.join(map(repr, bad))} hold a comma; vmadm "
                           "could never remove them (its update lists cannot carry commas)")


def customer_view(vm: dict[str, Any]) -> dict[str, Any]:
    """A ``vmadm get`` object's customer metadata as the head node knows it: customer_metadata
    with the ``*_pw`` keys of internal_metadata."""
    internal = vm.get("internal_metadata") or {}
    return {**(vm.get("customer_metadata") or {}),
            **{k: v for k, v in internal.items() if k.endswith(PW_SUFFIX)}}


def create_payload(spec: dict[str, Any], brand: str,
                   boot: dict[str, Any] | None = None) -> dict[str, Any]:
    """vmadm's create payload (vmadm(8) PROPERTIES); quota is in GiB, rounded up. NICs,
    resolvers and routes are in it only when the machine has them, internal_metadata only
    when a ``*_pw`` key or ``boot`` (vmadm_boot.boot_properties: kernel_version, init_name,
    a docker zone's properties) puts something there."""
    removable_keys("metadata", spec.get("metadata") or {})
    removable_keys("tag", spec.get("tags") or {})
    customer, internal = split_metadata(spec.get("metadata") or {})
    boot = dict(boot or {})
    internal.update(boot.pop("internal_metadata", {}))
    payload: dict[str, Any] = {
        "uuid": spec["uuid"],
        "alias": spec["alias"],
        "hostname": spec["alias"],
        "brand": brand,
        "image_uuid": spec["image_uuid"],
        "owner_uuid": spec["owner_uuid"],
        "max_physical_memory": spec["ram_mb"],
        "max_locked_memory": spec["ram_mb"],
        "max_swap": max(spec["ram_mb"], MIN_SWAP_MB),
        "quota": math.ceil(spec["disk_mb"] / GIB_MB),
        "max_lwps": spec["max_lwps"],
        "autoboot": True,
        "tags": dict(spec.get("tags") or {}),
        "customer_metadata": customer,
        **boot,
    }
    if internal:
        payload["internal_metadata"] = internal
    if spec.get("cpu_cap"):
        payload["cpu_cap"] = spec["cpu_cap"]
    if spec.get("nics"):
        payload["nics"] = [vmadm_nic(nic) for nic in spec["nics"]]
    if spec.get("resolvers"):
        payload["resolvers"] = list(spec["resolvers"])
    if spec.get("routes"):
        payload["routes"] = dict(spec["routes"])
    return payload


def update_payload(params: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if params.get("alias") is not None:
        payload["alias"] = params["alias"]
    if params.get("ram_mb") is not None:
        ram = params["ram_mb"]
        payload.update(max_physical_memory=ram, max_locked_memory=ram,
                       max_swap=max(ram, MIN_SWAP_MB))
    if params.get("disk_mb") is not None:
        payload["quota"] = math.ceil(params["disk_mb"] / GIB_MB)
    for key in ("cpu_cap", "max_lwps"):
        if params.get(key) is not None:
            payload[key] = params[key]
    return payload


def metadata_payload(params: dict[str, Any]) -> dict[str, Any]:
    """vmadm update's payload for a MachineMetadataUpdateSchema change (vmadm(8) update:
    ``set_X`` an object of string values, ``remove_X`` a list of keys, for X customer_metadata,
    internal_metadata and tags): only the non-empty ones. ``*_pw`` keys are set and removed in
    internal_metadata; a key absent from the zone is removed without complaint by vmadm."""
    set_customer, set_internal = split_metadata(params.get("set_customer_metadata") or {})
    remove = list(params.get("remove_customer_metadata") or [])
    removable_keys("metadata", [*set_customer, *set_internal, *remove])
    removable_keys("tag", [*(params.get("set_tags") or {}), *(params.get("remove_tags") or [])])
    payload: dict[str, Any] = {
        "set_customer_metadata": set_customer,
        "remove_customer_metadata": [k for k in remove if not k.endswith(PW_SUFFIX)],
        "set_internal_metadata": set_internal,
        "remove_internal_metadata": [k for k in remove if k.endswith(PW_SUFFIX)],
        "set_tags": dict(params.get("set_tags") or {}),
        "remove_tags": list(params.get("remove_tags") or []),
    }
    return {key: value for key, value in payload.items() if value}


def imgapi_manifest(image: dict[str, Any], file: dict[str, Any], path: Path) -> dict[str, Any]:
    """The IMGAPI manifest imgadm install wants (it checks files[0].sha1 and size), with the
    image's ``requirements`` and ``tags`` when it has them: imgadm keeps the manifest, and
    machine_create reads the brand (``requirements.brand``) and an lx image's
    ``tags.kernel_version`` from it. The image's ``init`` is not an IMGAPI field; it reaches the
    node with each machine spec."""
    sha1 = hashlib.sha1()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha1.update(chunk)
    return {
        "v": 2,
        "uuid": image["uuid"],
        "name": image["name"],
        "version": image.get("version") or "0",
        "type": image.get("type") or "zone-dataset",
        "os": image.get("os") or "other",
        "state": "active",
        "disabled": False,
        "public": False,
        "files": [{"sha1": sha1.hexdigest(), "size": file["size"],
                   "compression": file["compression"]}],
        **{key: dict(image[key]) for key in ("requirements", "tags") if image.get(key)},
    }
