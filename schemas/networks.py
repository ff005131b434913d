"""Wire formats of networks and SSH keys in the operator API (``/ops/networks``,
``/ops/accounts/<login>/keys``).

A network body is checked in one place, the networks service (``_network_fields``), which
every caller goes through and which names the failing field: names, tags, ranges, addresses,
overlaps and defaults. ``NetworkCreate`` only says which fields there are and their JSON types
(for the OpenAPI document, and so that an unknown field is refused)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from schemas.ops import RequestSchema


class NetworkCreate(RequestSchema):
    name = fields.String(required=True, metadata={"description": "1 to 128 of [A-Za-z0-9_.-], "
                                                  "starting with a letter or digit"})
    subnet = fields.String(required=True, metadata={"description": "IPv4 CIDR, e.g. "
                                                    "10.88.0.0/24"})
    gateway = fields.String(allow_none=True)
    provision_start_ip = fields.String(metadata={"description": "default: first host"})
    provision_end_ip = fields.String(metadata={"description": "default: last host"})
    resolvers = fields.List(fields.String(), metadata={"description": "IPv4 addresses"})
    vlan_id = fields.Integer(metadata={"description": "0 to 4094, default 0"})
    nic_tag = fields.String(metadata={"description": "1 to 31 of [A-Za-z0-9_], default "
                                      "external"})
    public = fields.Boolean(metadata={"description": "default: true unless owner is given"})
    owner = fields.String(metadata={"description": "account uuid or login (a private "
                                    "network)"})
    description = fields.String(metadata={"description": "at most 512 characters"})


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
