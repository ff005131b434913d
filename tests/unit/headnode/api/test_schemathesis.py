"""schemathesis over both APIs' OpenAPI documents (issue 14, item 7), in process (WSGI) on the
real app, PostgreSQL and Redis: every operation gets a bounded number of generated requests,
valid ones (positive) and invalid ones (negative), with a fixed seed; none may answer 5xx and
every answer must be as its document says (status, content type, headers, body schema).

The operator API is called with its token, CloudAPI with HTTP Signatures made for exactly
the request the app receives (``SigningApp``, a WSGI wrapper that signs as a client does).
schemathesis' checks all run (use_after_free, ensure_resource_availability and
object_level_authorization see nothing outside a stateful run); one is widened: a
schema-valid request may be refused with a 400 when a string holds a NUL (both APIs) and,
in the operator API, with a 422 for what its services check beyond the document (see
``OPS_ACCEPTANCE``).
The figures of the run (requests, operations, answers per status, failures by check) are
printed: ``pytest -s tests/unit/headnode/api/test_schemathesis.py``.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

from headnode.services import nics
from tests.support.httpsig_client import Signer
from tests.unit.headnode.api.conftest import AUTH, make_image, make_machine, make_server
from tests.unit.headnode.cloudapi import conftest as cloudapi
from tests.unit.headnode.cloudapi.conftest import World

world, call, machine_of = cloudapi.world, cloudapi.call, cloudapi.machine_of

#: generated requests per operation and mode: small, so both APIs run in about a minute in
#: CI (`make bench` runs 40);
#: SDC_SCHEMATHESIS_EXAMPLES=N asks for N valid and N/2 invalid ones (a deeper run by hand)
POSITIVE_EXAMPLES = int(os.environ.get("SDC_SCHEMATHESIS_EXAMPLES", "8"))
NEGATIVE_EXAMPLES = max(1, POSITIVE_EXAMPLES // 2)


@dataclass
class Tally:
    """What a run sent and what came back."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    operations: set[str] = field(default_factory=set)
    #: operations a generated request got a 2xx from
    succeeded: set[str] = field(default_factory=set)
    #: (check title, operation) -> a few examples of what failed
    failures: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def counting(self, app: Any) -> Any:
        """``app`` counting every request that reaches it: generated ones and those the
        checks send (the same one without authentication, another method...)."""

        def counted(environ: dict[str, Any], start_response: Any) -> Any:
            def start(status: str, headers: Any, *args: Any) -> Any:
                self.requests += 1
                self.statuses[int(status.split()[0])] += 1
                return start_response(status, headers, *args)

            return app(environ, start)

        return counted

    def fail(self, label: str, group: FailureGroup, case: Any, response: Any) -> None:
        for failure in group.exceptions:
            seen = self.failures.setdefault((failure.title, label), [])
            if len(seen) < 3:
                seen.append(f"{str(failure.message)[:200]} | sent {case.path_parameters} "
                            f"{case.query} {case.body!r:.200} -> {response.status_code} "
                            f"{response.text[:300]}")

    def report(self, name: str) -> str:
        lines = [f"{name}: {self.requests} requests, {len(self.operations)} operations "
                 f"({len(self.succeeded)} answered 2xx at least once), "
                 f"statuses {dict(sorted(self.statuses.items()))}, "
                 f"{len(self.failures)} failing (check, operation) pairs"]
        lines.append("  no 2xx: " + ", ".join(sorted(self.operations - self.succeeded)))
        for (title, label), examples in sorted(self.failures.items()):
            lines.append(f"  {title} — {label}: {examples[0]}")
        return "\n".join(lines)


def authenticate_with(schema: Any, authorization: str) -> Any:
    """Every generated request carries this Authorization (checks that test what an
    unauthenticated request gets take it away)."""

    @schema.auth()
    class Provider:
        def get(self, case: Any, context: Any) -> str:
            return authorization

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": data}

    return schema


@dataclass
class Existing:
    """What a valid request to one operation may name instead of generated values: path
    parameters, and a whole body."""

    path: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


#: (method, path) -> what exists there
Known = Callable[[str, str], Existing]


#: positive_data_acceptance: what a schema-valid request may still be answered. Every string
#: is refused with a 400 when it holds a NUL (headnode.api.input_guard), which JSON Schema
#: does not say without a pattern on every string.
ACCEPTANCE = {"checks": {"positive_data_acceptance": {
    "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]}}}
#: The operator API answers 422 (ValidationFailed, InvalidArgument) both for what its document
#: says and for what its services check beyond JSON types: a package, account or network
#: that must exist, a CIDR, an IPv4 address, imgadm's name rules, a MAC in a path, a change
#: that names no field. Valid-by-schema requests refused so are not failures there.
OPS_ACCEPTANCE = {"checks": {"positive_data_acceptance": {
    "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429"]}}}


def run_schema(schema: Any, tally: Tally, known: Known = lambda _m, _p: Existing(),
               settle: Callable[[], None] = lambda: None) -> None:
    """Every operation, positive then negative examples; failures recorded, not raised, so
    one run shows them all. A positive example names, half of the time, objects that exist
    (``known(method, path)``), so that more than 404s come back; ``settle()`` after each
    request plays the worker (a job started on the machine named ends), so that the next
    change is not refused as busy."""
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in ((GenerationMode.POSITIVE, POSITIVE_EXAMPLES),
                               (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES)):
            existing = known(operation.method.upper(), operation.path) if mode.is_positive \
                else Existing()
            existing.path = {name: value for name, value in existing.path.items()
                             if f"{{{name}}}" in operation.path}
            run_operation(schema, operation, mode, examples, tally, existing, settle)


def run_operation(schema: Any, operation: Any, mode: GenerationMode, examples: int,
                  tally: Tally, existing: Existing, settle: Callable[[], None]) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, auth_storage=schema.auth),
           name_existing=st.booleans())
    def one(case: Any, name_existing: bool) -> None:
        if name_existing and existing.path:
            case.path_parameters = {**case.path_parameters, **existing.path}
        if name_existing and existing.body is not None:
            case.body = dict(existing.body)
        response = case.call()
        settle()
        tally.operations.add(label)
        if response.status_code < 300:
            tally.succeeded.add(label)
        try:
            case.validate_response(response)
        except FailureGroup as group:
            tally.fail(label, group, case, response)

    try:
        one()
    except Unsatisfiable:
        # nothing in the operation can be made invalid (no parameters, no body)
        assert mode is GenerationMode.NEGATIVE, label


@pytest.fixture
def tally() -> Tally:
    return Tally()


@pytest.fixture
def ops_schema(app: Flask, tally: Tally) -> Any:
    schema = schemathesis.openapi.from_wsgi("/ops/openapi.json", app,
                                            config=schemathesis.Config.from_dict(OPS_ACCEPTANCE))
    schema.app = tally.counting(app)
    return authenticate_with(schema, AUTH["Authorization"])


def fleet_objects(world: World, server_uuid: str, machine_uuid: str) -> Known:
    """What the operator's run names half of the time: the server, a machine of alice, the
    package, the public image and network, alice and her key; creates of a machine."""
    by_prefix = (
        ("/ops/servers/{uuid}", {"uuid": server_uuid}),
        ("/ops/machines/{uuid}", {"uuid": machine_uuid}),
        ("/ops/packages/{ident}", {"ident": "small"}),
        ("/ops/images/{uuid}", {"uuid": world.public_image_uuid}),
        ("/ops/accounts/{ident}", {"ident": "alice", "key": "main"}),
        ("/ops/networks/{ident}", {"ident": "external"}),
    )
    bodies = {
        ("POST", "/ops/machines"): {"owner": "alice", "package": "small", "image": "base-64"},
        ("POST", "/ops/allocate"): {"package": "small", "image": "base-64"},
        ("POST", "/ops/machines/{uuid}/nics"): {"network": "alice-net"},
        ("PUT", "/ops/accounts/{ident}/default-network"): {"network": "external"},
    }

    def known(method: str, path: str) -> Existing:
        names = next((named for prefix, named in by_prefix if path.startswith(prefix)), {})
        return Existing(dict(names), bodies.get((method, path)))

    return known


def test_operator_api(ops_schema: Any, tally: Tally, world: World, sdc: Any) -> None:
    server = make_server(sdc, hostname="cn2")
    machine = make_machine(sdc, {"owner": world.alice, "package": world.package,
                                 "image": make_image(sdc, name="img-x"), "server": server},
                           state="running")
    run_schema(ops_schema, tally, fleet_objects(world, server.uuid, machine.uuid),
               settle=lambda: cloudapi.finish(sdc, machine.uuid))
    print(tally.report("operator API"))
    assert not [s for s in tally.statuses if s >= 500], tally.report("operator API")
    assert not tally.failures, tally.report("operator API")


# --------------------------------------------------------------------------- CloudAPI

#: what a test asks the signing wrapper to replace with a real signature
SIGN_ME = "Signature sign-me"


class SigningApp:
    """The app behind a client that signs each request it sends (HTTP Signature over
    ``(request-target) date x-request-id``, the request id fresh each time so that two equal
    generated requests are two requests, not a replay). Only a request carrying ``SIGN_ME`` is
    signed: one sent without authentication stays so."""

    def __init__(self, app: Flask, signer: Signer) -> None:
        self.app, self.signer = app, signer

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_AUTHORIZATION") == SIGN_ME:
            environ["HTTP_DATE"] = formatdate(usegmt=True)
            environ["HTTP_X_REQUEST_ID"] = str(uuid.uuid4())
            target = environ.get("RAW_URI") or environ["PATH_INFO"]
            text = (f"(request-target): {environ['REQUEST_METHOD'].lower()} {target}\n"
                    f"date: {environ['HTTP_DATE']}\nx-request-id: {environ['HTTP_X_REQUEST_ID']}")
            environ["HTTP_AUTHORIZATION"] = (
                f'Signature keyId="/{self.signer.login}/keys/{self.signer.fingerprint}",'
                f'algorithm="{self.signer.algorithm}",headers="(request-target) date '
                f'x-request-id",signature="{self.signer.sign_text(text)}"')
        return self.app(environ, start_response)


def alice_objects(world: World, machine: dict[str, Any], doomed: dict[str, Any],
                  mac: str) -> Known:
    """What alice has, by path: the machine "web" (its NIC, its tag role), "doomed" for the
    delete, her image and network, the package. Her key is never named: deleting it would
    end the run's signatures."""

    bodies = {
        ("POST", "/{login}/machines"): {"image": "base-64", "package": "small"},
        ("POST", "/{login}/machines/{uuid}/nics"): {"network": world.alice.network_uuid},
    }

    def known(method: str, path: str) -> Existing:
        body = bodies.get((method, path))
        if path.startswith("/{login}/machines/{uuid}"):
            uuid_ = doomed["id"] if (method, path) == ("DELETE", "/{login}/machines/{uuid}") \
                else machine["id"]
            key = "role" if "/tags" in path else "root_authorized_keys"
            return Existing({"uuid": uuid_, "mac": mac.replace(":", ""), "key": key}, body)
        if (method, path) == ("GET", "/{login}/keys/{name}"):
            return Existing({"name": "main"})
        return Existing({"/{login}/images/{uuid}": {"uuid": world.alice.image_uuid},
                         "/{login}/networks/{uuid}": {"uuid": world.alice.network_uuid},
                         "/{login}/packages/{ident}": {"ident": "small"}}.get(path, {}), body)

    return known


@pytest.fixture
def cloudapi_schema(app: Flask, world: World, tally: Tally) -> Any:
    document = app.test_client().get("/--openapi.json").get_json()
    # the run acts as alice: her own paths, by login or as my
    document["components"]["parameters"]["login"]["schema"] = {"enum": ["my", "alice"]}
    schema = schemathesis.openapi.from_dict(document,
                                            config=schemathesis.Config.from_dict(ACCEPTANCE))
    schema.app = tally.counting(SigningApp(app, world.alice.signer))
    return authenticate_with(schema, SIGN_ME)


def test_cloudapi(cloudapi_schema: Any, tally: Tally, world: World, sdc: Any,
                  machine_of: Any) -> None:
    machine = machine_of(world.alice, "web", tags={"role": "db"})
    doomed = machine_of(world.alice, "doomed")
    with sdc.read() as session:
        mac = nics.list_nics(session, machine["id"])[0].mac
    run_schema(cloudapi_schema, tally, alice_objects(world, machine, doomed, mac),
               settle=lambda: cloudapi.finish(sdc, machine["id"]))
    print(tally.report("CloudAPI"))
    assert not [s for s in tally.statuses if s >= 500], tally.report("CloudAPI")
    assert not tally.failures, tally.report("CloudAPI")
