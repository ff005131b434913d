"""Wire formats of networks and SSH keys in the operator API (``/ops/networks``,
``/ops/accounts/<login>/keys``), and of machines' NICs (``/ops/machines/<uuid>/nics``).

A network body is checked in one place, the networks service (``_network_fields``), which
every caller goes through and which names the failing field: names, tags, ranges, addresses,
overlaps and defaults. ``NetworkCreate`` only says which fields there are and their JSON types
(for the OpenAPI document, and so that an unknown field is refused)."""

from __future__ import annotations

import re

from marshmallow import Schema, fields, validate

from schemas.nics import MAX_ALLOWED_IPS, ipv4_address, ipv4_address_or_network
from schemas.ops import ChangeSchema, RequestSchema
from schemas.wire import BoundedInteger, JsonBoolean

#: a MAC as paths may give it: with colons, or without them as CloudAPI's GetNic has it
_MAC_IN_PATH = re.compile(r"^[0-9a-fA-F]{2}(:?[0-9a-fA-F]{2}){5}$")
#: NIC states (CloudAPI's, plus ``removing`` while a removal job runs)
NIC_STATES = ("provisioning", "running", "stopped", "removing")


def canonical_mac(value: str) -> str | None:
    """``90b8d02fb8f9`` or ``90:B8:D0:2F:B8:F9`` -> ``90:b8:d0:2f:b8:f9``; None for
    anything else (the caller names the field)."""
    if not _MAC_IN_PATH.match(value) or (":" in value and value.count(":") != 5):
        return None
    bare = value.replace(":", "").lower()
    return ":".join(bare[i:i + 2] for i in range(0, 12, 2))


class NetworkCreate(RequestSchema):
    name = fields.String(required=True, metadata={"description": "1 to 128 of [A-Za-z0-9_.-], "
                                                  "starting with a letter or digit"})
    subnet = fields.String(required=True, metadata={"description": "IPv4 CIDR, e.g. "
                                                    "10.88.0.0/24"})
    gateway = fields.String(allow_none=True)
    provision_start_ip = fields.String(metadata={"description": "default: first host"})
    provision_end_ip = fields.String(metadata={"description": "default: last host"})
    resolvers = fields.List(fields.String(), metadata={"description": "IPv4 addresses"})
    vlan_id = BoundedInteger(metadata={"description": "0 to 4094, default 0"})
    nic_tag = fields.String(metadata={"description": "1 to 31 of [A-Za-z0-9_], default "
                                      "external"})
    public = JsonBoolean(metadata={"description": "default: true unless owner is given"})
    owner = fields.String(metadata={"description": "account uuid or login (a private "
                                    "network)"})
    description = fields.String(metadata={"description": "at most 512 characters"})
    mtu = BoundedInteger(metadata={"description": "576 to 9000, default 1500: every NIC "
                                   "on the network gets it"})
    routes = fields.Dict(keys=fields.String(), values=fields.String(), metadata={
        "description": "static routes of the machines on the network: {destination CIDR "
                       "or address: gateway}"})


class Network(Schema):
    uuid = fields.String()
    name = fields.String()
    subnet = fields.String()
    netmask = fields.String()
    gateway = fields.String(allow_none=True)
    provision_start_ip = fields.String()
    provision_end_ip = fields.String()
    resolvers = fields.List(fields.String())
    vlan_id = fields.Integer()
    nic_tag = fields.String()
    public = fields.Boolean()
    owner_uuid = fields.String(allow_none=True)
    description = fields.String()
    mtu = fields.Integer()
    routes = fields.Dict(keys=fields.String(), values=fields.String())
    created_at = fields.DateTime()


class NetworkIp(Schema):
    ip = fields.String()
    reserved = fields.Boolean()
    managed = fields.Boolean()
    belongs_to_uuid = fields.String()
    belongs_to_type = fields.String()
    owner_uuid = fields.String()


class DefaultNetwork(RequestSchema):
    network = fields.String(required=True, allow_none=True,
                            metadata={"description": "network uuid or name; null: the first "
                                      "public network"})


class KeyCreate(RequestSchema):
    name = fields.String(validate=validate.Length(min=1, max=128),
                         metadata={"description": "default: the key's MD5 fingerprint"})
    key = fields.String(required=True, metadata={"description": "OpenSSH public key line"})


class Key(Schema):
    name = fields.String()
    fingerprint = fields.String(metadata={"description": "MD5, as CloudAPI shows it"})
    fingerprint_sha256 = fields.String()
    key = fields.String()
    created = fields.DateTime()


# ---------------------------------------------------------------------------- NICs


class Nic(Schema):
    """A machine's NIC as the operator sees it: CloudAPI's NIC object plus where the node
    plugs it (nic tag, VLAN, ``netN``) and its anti-spoofing settings."""

    mac = fields.String()
    ip = fields.String()
    netmask = fields.String()
    gateway = fields.String(allow_none=True)
    primary = fields.Boolean()
    state = fields.String(metadata={"enum": list(NIC_STATES)})
    network = fields.String(metadata={"description": "network uuid (CloudAPI's name)"})
    network_uuid = fields.String()
    machine_uuid = fields.String()
    interface = fields.String(metadata={"description": "net0, net1, ... inside the machine"})
    nic_tag = fields.String()
    vlan_id = fields.Integer()
    mtu = fields.Integer()
    allow_ip_spoofing = fields.Boolean()
    allow_mac_spoofing = fields.Boolean()
    allow_dhcp_spoofing = fields.Boolean()
    allow_restricted_traffic = fields.Boolean()
    allowed_ips = fields.List(fields.String())
    created_at = fields.DateTime()


class NicCreate(RequestSchema):
    network = fields.String(required=True, validate=validate.Length(min=1, max=128),
                            metadata={"description": "network uuid or name"})
    ip = fields.String(validate=ipv4_address, metadata={
        "description": "an address in the network's subnet (default: the lowest free one "
                       "in its provision range)"})


class NicUpdate(ChangeSchema):
    """The operator's anti-spoofing settings of one NIC (vmadm's ``update_nics``); a field
    left out stays as it is."""

    allow_ip_spoofing = JsonBoolean()
    allow_mac_spoofing = JsonBoolean()
    allow_dhcp_spoofing = JsonBoolean()
    allow_restricted_traffic = JsonBoolean()
    allowed_ips = fields.List(fields.String(validate=ipv4_address_or_network),
                              validate=validate.Length(max=MAX_ALLOWED_IPS), metadata={
                                  "description": "more addresses or CIDRs the machine may "
                                                 "send from on this NIC"})


class NicJob(Schema):
    """The answer to a NIC change: the job making it, and the NIC as it stands."""

    machine_uuid = fields.String()
    job_uuid = fields.String()
    nic = fields.Nested(Nic)

