"""The status checks' cache of node command answers."""

from __future__ import annotations

import time

from agents.backends.ttlcache import TtlCache


def test_an_answer_is_kept_for_ttl_then_asked_again() -> None:
    cache, calls = TtlCache(0.05), [0]

    def vmadm_list() -> int:
        calls[0] += 1
        return calls[0]

    assert [cache.get("vms", vmadm_list) for _ in range(3)] == [1, 1, 1]
    time.sleep(0.06)
    assert cache.get("vms", vmadm_list) == 2


def test_forget_drops_one_key_and_an_answer_computed_across_it_is_not_kept() -> None:
    cache = TtlCache(60)
    assert cache.get("vms", lambda: "old") == "old"
    assert cache.get("pool", lambda: "pool") == "pool"
    cache.forget("vms")
    assert cache.get("pool", lambda: "new pool") == "pool"

    def computed_while_an_operation_ends() -> str:
        cache.forget("vms")
        return "stale"

    assert cache.get("vms", computed_while_an_operation_ends) == "stale"
    assert cache.get("vms", lambda: "fresh") == "fresh"  # the stale one was not kept
