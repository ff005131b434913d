"""Wire formats of placement and capacity planning (``/ops/allocate``, ``/ops/capacity``)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from schemas.ops import RequestSchema
from schemas.wire import BoundedInteger, JsonBoolean

#: one simulation places at most this many machines and adds at most this many servers
MAX_SIMULATED = 20_000

AffinityRules = fields.List(
    fields.String(validate=validate.Length(min=1, max=512)), validate=validate.Length(max=32),
    metadata={"description": "CloudAPI affinity rules: instance==web1, role!=db, "
                             "instance!=~web*, instance==/^db/"})


Networks = fields.List(
    fields.String(validate=validate.Length(min=1, max=256)), validate=validate.Length(max=32),
    metadata={"description": "networks (uuids or names) the machine would have, as a "
                             "create's: a server must provide every one's nic tag. Left "
                             "out: the owner's default network"})


# ---------------------------------------------------------------------------- allocate


class AllocateRequest(RequestSchema):
    package = fields.String(required=True, validate=validate.Length(min=1),
                            metadata={"description": "package uuid or name"})
    image = fields.String(required=True, validate=validate.Length(min=1),
                          metadata={"description": "image uuid or name"})
    owner = fields.String(validate=validate.Length(min=1),
                          metadata={"description": "account uuid or login (affinity, spread)"})
    affinity = AffinityRules
    networks = Networks
    dry_run = JsonBoolean(load_default=True, validate=validate.Equal(
        True, error="only dry runs: create a machine to allocate for real"))


class Step(Schema):
    name = fields.String()
    reason = fields.String()
    removed = fields.Integer(metadata={"description": "servers this step removed"})
    remaining = fields.Integer(metadata={"description": "servers left after it"})


class AllocateAnswer(Schema):
    dry_run = fields.Boolean()
    server_uuid = fields.String(allow_none=True)
    hostname = fields.String(allow_none=True)
    considered = fields.Integer()
    steps = fields.List(fields.Nested(Step))
    reasons = fields.Dict(keys=fields.String(), values=fields.Integer())
    scores = fields.Dict(keys=fields.String(), values=fields.Float(),
                         metadata={"description": "the chosen server's weighted scores"})
    next_best = fields.List(fields.String(), metadata={
        "description": "the servers that would win next, best first: a create that loses "
                       "the race for the winner's room tries them before it reads the fleet "
                       "again"})
    message = fields.String()
    package = fields.String()
    image = fields.String()
    owner_uuid = fields.String(allow_none=True)
    nic_tags = fields.List(fields.String(), metadata={
        "description": "the nic tags the networks need (the nic-tags step removes the "
                       "servers that lack one)"})


# ---------------------------------------------------------------------------- capacity


class Amounts(Schema):
    total = fields.Integer()
    provisioned = fields.Integer(metadata={"description": "machines on their nodes"})
    reserved = fields.Integer(metadata={"description": "provisions in flight"})
    free = fields.Integer(metadata={"description": "what placement can still give"})


class ServerCapacity(Schema):
    uuid = fields.String()
    hostname = fields.String()
    placeable = fields.Boolean()
    machines = fields.Integer()
    images_mb = fields.Integer()
    ram_mb = fields.Nested(Amounts)
    cpu = fields.Nested(Amounts, metadata={"description": "percent of a CPU, overprovisioned"})
    disk_mb = fields.Nested(Amounts)


class FleetCapacity(Schema):
    servers = fields.Integer()
    placeable_servers = fields.Integer()
    machines = fields.Integer()
    ram_mb = fields.Nested(Amounts)
    cpu = fields.Nested(Amounts)
    disk_mb = fields.Nested(Amounts)


class PackageFit(Schema):
    uuid = fields.String()
    name = fields.String()
    memory = fields.Integer()
    disk = fields.Integer()
    cpu_cap = fields.Integer()
    fits = fields.Integer(metadata={"description": "more machines of it that fit, packed "
                                                   "server by server"})


class CapacityAnswer(Schema):
    servers = fields.List(fields.Nested(ServerCapacity))
    fleet = fields.Nested(FleetCapacity)
    packages = fields.List(fields.Nested(PackageFit))


# ---------------------------------------------------------------------------- simulate


class ServerTemplate(RequestSchema):
    ram_mb = BoundedInteger(required=True, minimum=1)
    cpus = BoundedInteger(required=True, minimum=1)
    disk_mb = BoundedInteger(required=True, minimum=1)
    count = BoundedInteger(load_default=1, minimum=1, maximum=MAX_SIMULATED)
    backend = fields.String(validate=validate.Length(min=1, max=16))
    traits = fields.Dict(keys=fields.String())
    nic_tags = fields.List(fields.String(validate=validate.Length(min=1, max=31)),
                           validate=validate.Length(max=64), metadata={
                               "description": "the nic tags the servers provide (left out: "
                                              "the nic-tags step lets them through)"})


class PlaceItem(RequestSchema):
    package = fields.String(required=True, validate=validate.Length(min=1))
    count = BoundedInteger(required=True, minimum=1, maximum=MAX_SIMULATED)
    affinity = AffinityRules
    networks = Networks
    alias = fields.String(validate=validate.Length(min=1, max=64), metadata={
        "description": "the placed machines are named <alias>1, <alias>2... (for affinity)"})


class SimulateRequest(RequestSchema):
    add_servers = fields.List(fields.Nested(ServerTemplate), validate=validate.Length(max=100))
    remove_servers = fields.List(fields.UUID(), validate=validate.Length(max=10_000))
    place = fields.List(fields.Nested(PlaceItem), required=True,
                        validate=validate.Length(min=1, max=100))
    owner = fields.String(validate=validate.Length(min=1),
                          metadata={"description": "whose machines the affinity rules see"})


class Placement(Schema):
    package = fields.String()
    requested = fields.Integer()
    placed = fields.Integer()
    refused = fields.Integer()
    servers = fields.Dict(keys=fields.String(), values=fields.Integer(),
                          metadata={"description": "hostname -> machines placed"})
    refusal = fields.String(allow_none=True)


class FreeRoom(Schema):
    ram_mb = fields.Integer()
    cpu = fields.Integer()
    disk_mb = fields.Integer()


class SimulatedServer(Schema):
    uuid = fields.String()
    hostname = fields.String()
    added = fields.Boolean()
    placeable = fields.Boolean()
    machines = fields.Integer()
    machines_placed = fields.Integer()
    free = fields.Nested(FreeRoom)


class SimulateAnswer(Schema):
    placements = fields.List(fields.Nested(Placement))
    servers = fields.List(fields.Nested(SimulatedServer))
    fleet_free = fields.Nested(FreeRoom)
    packages = fields.List(fields.Nested(PackageFit))
    removed = fields.List(fields.String())


# ---------------------------------------------------------------------------- history


class HistoryQuery(Schema):
    since = fields.DateTime(metadata={
        "description": "ISO 8601 (UTC when no offset); only snapshots taken at or after it"})
    limit = BoundedInteger(load_default=1000, minimum=1, maximum=10_000, strict=False)


class HistoryPoint(Schema):
    taken_at = fields.DateTime()
    servers = fields.Integer()
    placeable_servers = fields.Integer()
    machines = fields.Integer()
    ram_mb = fields.Nested(Amounts)
    cpu = fields.Nested(Amounts)
    disk_mb = fields.Nested(Amounts)


# ---------------------------------------------------------------------------- forecast

#: the longest window a forecast fits its trend over (the history keeps 30 days by default)
MAX_FORECAST_DAYS = 3650


class ForecastQuery(Schema):
    days = BoundedInteger(load_default=30, minimum=1, maximum=MAX_FORECAST_DAYS, strict=False,
                          metadata={"description": "fit the trend over the history of the "
                                                   "last this many days"})


class Trend(Schema):
    per_day = fields.Float(metadata={"description": "growth of the used amount per day "
                                                    "(least squares)"})
    stderr = fields.Float(metadata={"description": "the slope's standard error"})
    r2 = fields.Float(allow_none=True, metadata={
        "description": "R² of the fit; null when every point is the same"})
    points = fields.Integer()


class ForecastTrends(Schema):
    ram_mb = fields.Nested(Trend, metadata={"description": "MiB a day; sets the pace"})
    cpu = fields.Nested(Trend, metadata={"description": "percent of a CPU a day (shown only)"})
    disk_mb = fields.Nested(Trend, metadata={"description": "MiB a day (shown only)"})


class ForecastHistory(Schema):
    points = fields.Integer(metadata={"description": "snapshots in the window"})
    first = fields.DateTime(allow_none=True)
    last = fields.DateTime(allow_none=True)


class MixShare(Schema):
    uuid = fields.String()
    name = fields.String()
    machines = fields.Integer(metadata={"description": "its live machines now"})
    share = fields.Float(metadata={"description": "its share of new machines, 0 to 1"})


class PackageForecast(Schema):
    uuid = fields.String()
    name = fields.String()
    memory = fields.Integer()
    disk = fields.Integer()
    cpu_cap = fields.Integer(allow_none=True)
    fits_now = fields.Integer(metadata={"description": "more machines of it that fit now"})
    ram_mb_until = fields.Integer(allow_none=True, metadata={
        "description": "RAM the growth places before it fits nowhere"})
    days = fields.Float(allow_none=True, metadata={"description": "from now to its date"})
    date = fields.DateTime(allow_none=True, metadata={
        "description": "when it stops fitting at the current growth; null: see reason"})
    earliest = fields.DateTime(allow_none=True, metadata={
        "description": "the date at the growth + 2 standard errors"})
    latest = fields.DateTime(allow_none=True, metadata={
        "description": "the date at the growth - 2 standard errors; null when that is no "
                       "growth or beyond the horizon"})
    reason = fields.String(allow_none=True, metadata={
        "description": "why there is no date (or why it is now)"})


class ForecastSimulation(Schema):
    decisions = fields.Integer(metadata={"description": "placement decisions simulated"})
    machines_per_decision = fields.Integer(metadata={
        "description": "1: machine by machine; more on a fleet with room for many "
                       "thousands (the dates are as fine as that)"})
    placed_ram_mb = fields.Integer(metadata={"description": "RAM placed until nothing fit"})


class ForecastAnswer(Schema):
    now = fields.DateTime()
    days = fields.Integer()
    history = fields.Nested(ForecastHistory)
    trend = fields.Nested(ForecastTrends, allow_none=True, metadata={
        "description": "null when the history is too short: see reason"})
    reason = fields.String(allow_none=True)
    mix = fields.List(fields.Nested(MixShare))
    assumptions = fields.List(fields.String())
    simulation = fields.Nested(ForecastSimulation)
    packages = fields.List(fields.Nested(PackageForecast))
