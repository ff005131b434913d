"""Signed Celery messages: every message proves who sent it, with a key per compute node.

Anyone who can reach Redis can push a message onto any queue, so a message's content says
nothing about its author. Each message therefore carries an HMAC-SHA256 over its task name,
id, arguments, sender and audience (the party it is for), keyed by the secret the two parties
share:

* a node and the head node share the node's key, derived from the head node's message key
  and the node's uuid (the head node issues it to the node: ``sdc server credentials``);
* the head node's processes share the head-node key, derived from the same message key.

Nodes never share a key with each other, so a node can neither speak for another node nor
send agent tasks to one. A receiver accepts a message only if the signature holds for the
claimed (sender, audience), the audience is one it serves, and the sender may send it:
a node only ``events.*`` to the head node, each naming only the node itself; the head node
anything, an agent task only for the node whose queue it is on. Anything else is logged and
dropped without running. A node whose credentials the head node revoked (a forgotten node:
the ``revoked`` predicate a head-node process installs with :func:`refuse_revoked`) is
refused whatever it signs, heartbeats included.

Signing hooks ``before_task_publish`` (every message any Celery app of the process sends);
checking is :class:`SignedTask`, the base class of both Celery apps' tasks. Heartbeats, plain
Redis hash fields, carry a MAC of their own (:func:`beat`, :func:`beat_time`).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Task
from celery.signals import before_task_publish
from kombu.utils.json import dumps

log = logging.getLogger(__name__)

SENDER, AUDIENCE, SIGNATURE = "sdc_sender", "sdc_audience", "sdc_sig"
HEADNODE = "headnode"
#: agent queues are named cn.<server uuid> (schemas/agent.py); a message on one is for that node
NODE_QUEUE_PREFIX = "cn."
#: the argument keys by which a node's event names the server it is about
SERVER_KEYS = ("server_uuid", "UUID")
#: turns checking off, to measure what signing costs (bench/provision_throughput.py) only
UNSIGNED_ENV = "SDC_INSECURE_UNSIGNED_MESSAGES"

#: the sender of the message the current task is running for; None for an in-process call
_sender: contextvars.ContextVar[str | None] = contextvars.ContextVar("sdc_sender", default=None)


class Refused(Exception):
    """A message that does not prove it may be run."""


def derive(message_key: bytes, party: str) -> bytes:
    """The key the head node shares with ``party`` (a node's uuid, or :data:`HEADNODE`)."""
    return hmac.new(message_key, b"sdc-message-key:" + party.encode(), hashlib.sha256).digest()


@dataclass
class Keyring:
    """The keys a process holds: the head node's message key (it can derive every key), or
    the keys of the nodes an agent process hosts."""

    #: reads the head node's message key, on first use (it may be made then)
    message_key_loader: Callable[[], bytes] | None = None
    node_keys: dict[str, bytes] = field(default_factory=dict)
    _message_key: bytes | None = None

    def shared(self, sender: str, audience: str) -> bytes | None:
        """The key ``sender`` and ``audience`` share; None when this process has none."""
        if HEADNODE not in (sender, audience):
            return None  # nodes never talk to each other
        party = audience if sender == HEADNODE else sender
        if self.message_key_loader is not None:
            if self._message_key is None:
                self._message_key = self.message_key_loader()
            return derive(self._message_key, party)
        return self.node_keys.get(party)


@dataclass
class _Config:
    keyring: Keyring | None = None
    #: whether this process serves the head node's queue
    headnode: bool = False
    #: the nodes this process hosts (an agent, a mock cloud)
    hosted: Callable[[], Collection[str]] = lambda: ()
    #: whether a node's credentials are revoked (it was forgotten): its key proves nothing
    revoked: Callable[[str], bool] = lambda _node: False

    def audiences(self) -> set[str]:
        return {*self.hosted(), *([HEADNODE] if self.headnode else [])}


_config = _Config()


def serve_headnode(message_key: Callable[[], bytes]) -> None:
    """Sign as the head node, and accept messages for it (every head-node process); the
    key is read when first needed."""
    keyring = _config.keyring or Keyring()
    if keyring.message_key_loader is not message_key:
        keyring.message_key_loader, keyring._message_key = message_key, None
    _config.keyring, _config.headnode = keyring, True


def serve_nodes(node_keys: Mapping[str, bytes], hosted: Callable[[], Collection[str]]) -> None:
    """Sign as the nodes of ``node_keys``, and accept messages for the ``hosted`` ones."""
    keyring = _config.keyring or Keyring()
    keyring.node_keys.update(node_keys)
    _config.keyring, _config.hosted = keyring, hosted


def refuse_revoked(revoked: Callable[[str], bool]) -> None:
    """Refuse every message and heartbeat signed by a node for which ``revoked`` holds (a
    head-node process: the predicate reads its list of forgotten nodes). A predicate that
    raises refuses the message too."""
    _config.revoked = revoked


def _is_revoked(node: str) -> bool:
    try:
        return _config.revoked(node)
    except Exception as exc:  # noqa: BLE001 - cannot tell: refuse rather than guess
        log.error("cannot tell whether node %s's credentials are revoked: %s", node, exc)
        return True


def enabled() -> bool:
    return os.environ.get(UNSIGNED_ENV) != "1"


def current_sender() -> str | None:
    return _sender.get()


def digest(key: bytes, task: str, task_id: str, sender: str, audience: str,
           args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    # kombu's JSON (what went on the wire, datetimes included), with sorted keys: the same
    # text on both sides whatever order the dicts were built in
    text = dumps([task, task_id, sender, audience, list(args), dict(kwargs)],
                 sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def audience_of(routing_key: str | None) -> str:
    if routing_key and routing_key.startswith(NODE_QUEUE_PREFIX):
        return routing_key[len(NODE_QUEUE_PREFIX):]
    return HEADNODE


@before_task_publish.connect
def _sign(sender: str | None = None, body: Any = None, headers: dict[str, Any] | None = None,
          routing_key: str | None = None, **_: Any) -> None:
    keyring = _config.keyring
    if keyring is None or headers is None or not isinstance(body, tuple | list) \
            or not enabled():
        return
    speaker = str(headers.get(SENDER) or HEADNODE)
    audience = audience_of(routing_key)
    key = keyring.shared(speaker, audience)
    if key is None:
        # sent unsigned: the receiver refuses it, and says so in its log
        log.error("no key to sign %s from %s to %s", sender, speaker, audience)
        return
    args, kwargs = body[0], body[1]
    headers.update({SENDER: speaker, AUDIENCE: audience,
                    SIGNATURE: digest(key, str(headers.get("task") or sender), str(headers["id"]),
                                      speaker, audience, args, kwargs)})


def check(task: str, request: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The proven sender of the message behind ``request``; raises :class:`Refused`."""
    keyring = _config.keyring
    speaker, audience = request.get(SENDER), request.get(AUDIENCE)
    signature = request.get(SIGNATURE)
    if not (isinstance(speaker, str) and isinstance(audience, str)
            and isinstance(signature, str)):
        raise Refused("the message is not signed")
    if audience not in _config.audiences():
        raise Refused(f"the message is for {audience}, not served here")
    if speaker != HEADNODE and _is_revoked(speaker):
        raise Refused(f"node {speaker}'s credentials are revoked (the server was forgotten)")
    key = keyring.shared(speaker, audience) if keyring is not None else None
    if key is None:
        raise Refused(f"no key shared with {speaker!r} for {audience!r}")
    expected = digest(key, task, str(request.id), speaker, audience, args, kwargs)
    if not hmac.compare_digest(expected, signature):
        raise Refused(f"the signature does not hold for sender {speaker}")
    _check_may_send(task, speaker, audience, args, kwargs)
    return speaker


def _check_may_send(task: str, speaker: str, audience: str, args: Sequence[Any],
                    kwargs: Mapping[str, Any]) -> None:
    if speaker == HEADNODE:
        # an agent task names its node first: it must be the node whose key signed it
        if audience != HEADNODE and (not args or args[0] != audience):
            raise Refused(f"a task for node {audience} names another node")
        return
    if not task.startswith("events.") or audience != HEADNODE:
        raise Refused(f"node {speaker} may send only events to the head node")
    named = {value[k] for value in [*args, *kwargs.values()] if isinstance(value, Mapping)
             for k in SERVER_KEYS if k in value}
    if named != {speaker}:
        raise Refused(f"node {speaker} may speak only for itself, not for "
                      f"{', '.join(sorted(map(str, named))) or 'no server'}")


def beat(key: bytes, server_uuid: str, at: float) -> str:
    """A heartbeat's value (a Redis hash field per node, not a Celery message): the time and
    a MAC by the node's key, so that only the node can keep itself alive."""
    text = repr(at)
    return f"{text} {_beat_mac(key, server_uuid, text)}"


def beat_time(server_uuid: str, value: str) -> float | None:
    """When ``server_uuid`` beat, if ``value`` proves the node wrote it; else None."""
    text, _, mac = value.partition(" ")
    try:
        at = float(text)
    except ValueError:
        return None
    if not enabled():
        return at
    if _is_revoked(server_uuid):
        return None
    key = _config.keyring.shared(server_uuid, HEADNODE) if _config.keyring else None
    if key is None or not hmac.compare_digest(mac, _beat_mac(key, server_uuid, text)):
        return None
    return at


def _beat_mac(key: bytes, server_uuid: str, text: str) -> str:
    return hmac.new(key, f"heartbeat:{server_uuid}:{text}".encode(),
                    hashlib.sha256).hexdigest()[:32]


class SignedTask(Task):  # type: ignore[misc]
    """Runs a task only for a message that proves its sender (see the module's docstring).
    A direct or eager call is in-process, not a message: it runs as the head node's own."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly or request.is_eager or not enabled():
            return super().__call__(*args, **kwargs)
        try:
            speaker = check(self.name, request, args, kwargs)
        except Refused as exc:
            log.warning("refused message %s (task %s, claimed sender %s): %s", request.id,
                        self.name, request.get(SENDER) or "none", exc)
            return None
        token = _sender.set(speaker)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            _sender.reset(token)
