"""NICs on the wire between the head node and agents, in vmadm's names (``nics.*``): a
machine's NICs at create, the NIC changes of a running machine, the nic tags a node provides
and the overlay directory the head node keeps every node's VXLAN uplinks current with."""

from __future__ import annotations

import ipaddress

from marshmallow import Schema, ValidationError, fields, validate

from schemas.ids import uuid_string

#: the NIC flags that lift one anti-spoofing rule each (vmadm's names; all default false)
SPOOF_FLAGS = ("allow_ip_spoofing", "allow_mac_spoofing", "allow_dhcp_spoofing",
               "allow_restricted_traffic")
#: what a NIC change (NicFlagsSchema, vmadm's ``update_nics``) may set besides its ``mac``
NIC_FLAG_FIELDS = (*SPOOF_FLAGS, "allowed_ips")
#: vmadm takes at most 13 entries in a NIC's ``allowed_ips`` (VM.js's validation)
MAX_ALLOWED_IPS = 13
#: ``\Z``, not ``$``: a node names veths, chains and files after these (schemas.ids)
MAC_PATTERN = r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z"
NIC_TAG_PATTERN = r"^[A-Za-z0-9_]{1,31}\Z"
#: the largest VLAN id (4095 is reserved by 802.1Q); 0 means untagged
MAX_VLAN_ID = 4094


def ipv4_interface(value: str) -> None:
    """An address with its prefix, as vmadm's ``ips`` has them: ``10.88.0.10/24``."""
    try:
        ipaddress.IPv4Interface(value)
    except ValueError as exc:
        raise ValidationError(f"{value!r} is not an IPv4 address with a prefix") from exc
    if "/" not in value:
        raise ValidationError(f"{value!r} has no prefix length (e.g. 10.88.0.10/24)")


def ipv4_address_or_network(value: str) -> None:
    try:
        ipaddress.IPv4Network(value, strict=False)
    except ValueError as exc:
        raise ValidationError(f"{value!r} is not an IPv4 address or CIDR") from exc


def ipv4_address(value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise ValidationError(f"{value!r} is not an IPv4 address") from exc


class NicSpecSchema(Schema):
    """One NIC of a machine, in vmadm's names: the node puts it on the bridge of its nic tag
    and VLAN, as ``interface`` inside the machine, with ``mac``, ``mtu`` and the addresses of
    ``ips``; the primary NIC's first gateway is the machine's default route. The ``allow_*``
    flags and ``allowed_ips`` shape the node's anti-spoofing rules for it."""

    mac = fields.String(required=True, validate=validate.Regexp(MAC_PATTERN))
    interface = fields.String(required=True, validate=validate.Regexp(r"^net[0-9]{1,2}\Z"))
    nic_tag = fields.String(required=True, validate=validate.Regexp(NIC_TAG_PATTERN))
    vlan_id = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_VLAN_ID))
    ips = fields.List(fields.String(validate=ipv4_interface), load_default=list)
    gateways = fields.List(fields.String(validate=ipv4_address), load_default=list)
    primary = fields.Boolean(load_default=False)
    mtu = fields.Integer(load_default=1500, validate=validate.Range(min=576, max=9000))
    network_uuid = fields.String(load_default="")
    allow_ip_spoofing = fields.Boolean(load_default=False)
    allow_mac_spoofing = fields.Boolean(load_default=False)
    allow_dhcp_spoofing = fields.Boolean(load_default=False)
    allow_restricted_traffic = fields.Boolean(load_default=False)
    allowed_ips = fields.List(fields.String(validate=ipv4_address_or_network),
                              validate=validate.Length(max=MAX_ALLOWED_IPS), load_default=list)


class NicFlagsSchema(Schema):
    """A change of one NIC's anti-spoofing settings (vmadm's ``update_nics``, keyed by
    ``mac``); a field left out (None) stays as it is."""

    mac = fields.String(required=True, validate=validate.Regexp(MAC_PATTERN))
    allow_ip_spoofing = fields.Boolean(load_default=None, allow_none=True)
    allow_mac_spoofing = fields.Boolean(load_default=None, allow_none=True)
    allow_dhcp_spoofing = fields.Boolean(load_default=None, allow_none=True)
    allow_restricted_traffic = fields.Boolean(load_default=None, allow_none=True)
    allowed_ips = fields.List(fields.String(validate=ipv4_address_or_network),
                              validate=validate.Length(max=MAX_ALLOWED_IPS), load_default=None,
                              allow_none=True)


class MachineNicsAddSchema(Schema):
    """Add NICs to a machine (vmadm ``add_nics``): plugged at once into a running machine,
    at its next boot into a stopped one. Adding a NIC the machine has (same mac) is a no-op.
    ``routes``: the machine's VM-level routes as they are with the new NICs (a new network
    may bring its own); None keeps the machine's routes as they are."""

    uuid = uuid_string(required=True)
    nics = fields.List(fields.Nested(NicSpecSchema), required=True,
                       validate=validate.Length(min=1))
    routes = fields.Dict(keys=fields.String(validate=ipv4_address_or_network),
                         values=fields.String(validate=ipv4_address), load_default=None,
                         allow_none=True)


class MachineNicsRemoveSchema(Schema):
    """Remove NICs by MAC (vmadm ``remove_nics``); a MAC the machine lacks is no error."""

    uuid = uuid_string(required=True)
    macs = fields.List(fields.String(validate=validate.Regexp(MAC_PATTERN)), required=True,
                       validate=validate.Length(min=1))


class MachineNicsUpdateSchema(Schema):
    uuid = uuid_string(required=True)
    nics = fields.List(fields.Nested(NicFlagsSchema), required=True,
                       validate=validate.Length(min=1))


class OverlayPeersSchema(Schema):
    """The head node's directory for one node: for each nic tag the node provides, the
    underlay addresses of the other nodes providing it (its VXLAN uplinks send to these,
    unicast, and to no one else). ``version`` is a digest of ``peers``; the node reports the
    version it applied in its status (``overlay_version``) so the head node resends when the
    two differ. The result is ``{"overlay": {"version": ...}}``."""

    #: nic tag -> IPv4 addresses (they become forwarding entries of the node's uplinks)
    peers = fields.Dict(keys=fields.String(validate=validate.Regexp(NIC_TAG_PATTERN)),
                        values=fields.List(fields.String(validate=ipv4_address)),
                        required=True)
    version = fields.String(required=True)


class NicTagUplinkSchema(Schema):
    """Which link of the node carries a nic tag (None: host-local, an etherstub) and the
    node's underlay address on it (where other nodes' VXLAN uplinks send; None without one)."""

    link = fields.String(load_default=None, allow_none=True)
    underlay = fields.String(load_default=None, allow_none=True)
