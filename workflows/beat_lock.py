"""One scheduling beat per cloud: a Redis lock the beat must hold to send anything.

Two ``sdc headnode beat`` started by mistake (on one machine or two) would each send every
periodic task: twice the reconciler passes and capacity snapshots, for no gain. The beat's
scheduler takes a lock in Redis (SET NX with an expiry, renewed on every tick) and schedules
only while it holds it; another beat waits, says once that the lock is held, and takes over
once the holder has stopped renewing it (it died, or lost Redis for longer than the lock's
life). A beat stopped cleanly releases the lock, so the other takes over at once.

The scheduler keeps its schedule in memory (Celery's own ``Scheduler``, not the shelve file
of ``PersistentScheduler``): two beats on one machine would share that file, and every
periodic task here is harmless to run once more after a restart.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import redis
from celery import beat
from redis.exceptions import LockError, RedisError

from headnode.config import get_settings
from schemas.settings import SettingsError

log = logging.getLogger(__name__)

LOCK_KEY = "sdc:beat:lock"


class BeatLock:
    """The cloud's beat lock, as one beat process sees it."""

    def __init__(self, client: redis.Redis, ttl: float) -> None:
        if not ttl > 0:
            raise SettingsError(f"SDC_BEAT_LOCK_TTL: must be a number above 0, got {ttl}")
        self.client, self.ttl = client, ttl
        self.token = f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"
        self.lock = client.lock(LOCK_KEY, timeout=ttl, thread_local=False)
        self.held = False
        self._said_waiting_for: str | None = None

    @property
    def renew_every(self) -> float:
        """Renewed three times per life: one late tick does not lose it."""
        return self.ttl / 3

    def hold(self) -> bool:
        """True if this beat holds the lock now (renewed, or just taken); never waits."""
        try:
            if self.held:
                self.held = self._renew()
            if not self.held:
                self.held = self._take()
        except RedisError as exc:
            # Nothing can be sent without Redis anyway; the lock (if it survives) is renewed
            # on the next tick that reaches Redis.
            log.warning("beat lock: Redis unreachable (%s); not scheduling until it is back",
                        exc)
            return False
        return self.held

    def _renew(self) -> bool:
        try:
            self.lock.extend(self.ttl, replace_ttl=True)
            return True
        except LockError:
            log.warning("beat lock: lost it (it expired, or Redis lost it); not scheduling "
                        "until this beat holds it again")
            return False

    def _take(self) -> bool:
        if self.lock.acquire(blocking=False, token=self.token):
            log.info("beat lock: taken by %s; scheduling", self.token)
            self._said_waiting_for = None
            return True
        holder = self.client.get(LOCK_KEY)
        holder_name = holder.decode() if isinstance(holder, bytes) else str(holder)
        if holder_name != self._said_waiting_for:
            log.warning("beat lock: another beat (%s) holds it; this one waits and takes "
                        "over if that one stops (within %.0f s)", holder_name, self.ttl)
            self._said_waiting_for = holder_name
        return False

    def release(self) -> None:
        if not self.held:
            return
        try:
            self.lock.release()
            log.info("beat lock: released")
        except (LockError, RedisError) as exc:
            log.warning("beat lock: not released (%s); it expires within %.0f s", exc, self.ttl)
        self.held = False


class LockedScheduler(beat.Scheduler):
    """Celery's in-memory scheduler, sending only while this beat holds the beat lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = get_settings()
        self.beat_lock = BeatLock(redis.Redis.from_url(settings.redis_url, socket_timeout=5),
                                  settings.beat_lock_ttl)
        super().__init__(*args, **kwargs)
        # ticks at least this often, whatever the schedule, so the lock is renewed in time
        self.max_interval = min(self.max_interval,  # type: ignore[has-type]
                                self.beat_lock.renew_every)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.beat_lock.hold():
            return self.beat_lock.renew_every
        return min(float(super().tick(*args, **kwargs)), self.beat_lock.renew_every)

    def close(self) -> None:
        super().close()
        self.beat_lock.release()
