"""The store against a dict model, with close/reopen, kill -9 and kill-during-a-put steps.

The store runs in a child process (tests/store_process.py) so a crash step is a real SIGKILL. The
model keeps, per key, the set of values a read may return: one value normally; after a crash a cache
key may also be gone, and a put the crash cut off may or may not have landed. A read narrows the set
to what it saw (a forgotten cache key must never come back).
"""

from __future__ import annotations

import random
import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.store_process import StoreProcess

KEYS = st.sampled_from([b"k%d" % i for i in range(8)])
# Large values are random bytes: they do not compress, so demotion really reaches the cold tier.
NOISE = st.builds(
    lambda seed, n: random.Random(seed).randbytes(n), st.integers(0, 1 << 32), st.integers(3000, 30_000)
)
VALUES = st.one_of(st.binary(max_size=64), NOISE)
NS = st.sampled_from(["c", "p"])
BUDGETS = {"hot_bytes": 16 << 10, "warm_bytes": 24 << 10, "cold_bytes": 1 << 20, "prefault": False}


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="memstore-model-")
        self.store = StoreProcess(self.dir, **BUDGETS)
        self.store.call("create_namespace", "c")
        self.store.call("create_namespace", "p", durability="persistent")
        self.model: dict[str, dict[bytes, set[bytes | None]]] = {"c": {}, "p": {}}

    def _may(self, ns: str, key: bytes) -> set[bytes | None]:
        return self.model[ns].get(key, {None})

    def _saw(self, ns: str, key: bytes, got: bytes | None) -> None:
        allowed = self._may(ns, key) | ({None} if ns == "c" else set())  # cache keys may be forgotten
        assert got in allowed, f"{ns}/{key!r}: read {got!r:.40}, allowed {len(allowed)} values"
        self.model[ns][key] = {got}

    @rule(ns=NS, key=KEYS, value=VALUES)
    def put(self, ns: str, key: bytes, value: bytes) -> None:
        self.store.call("put", key, value, ns=ns)
        self.model[ns][key] = {value}

    @rule(ns=NS, key=KEYS)
    def get(self, ns: str, key: bytes) -> None:
        self._saw(ns, key, self.store.call("get", key, ns=ns))

    @rule(ns=NS, keys=st.lists(KEYS, max_size=5, unique=True))
    def get_many(self, ns: str, keys: list[bytes]) -> None:
        for k, v in zip(keys, self.store.call("get_many", keys, ns=ns, promote=False), strict=True):
            self._saw(ns, k, v)

    @rule(ns=NS, key=KEYS)
    def delete(self, ns: str, key: bytes) -> None:
        existed = self.store.call("delete", key, ns=ns)
        may = self._may(ns, key)
        if ns == "p":
            assert existed in ({v is not None for v in may})
        self.model[ns][key] = {None}

    @rule(ns=NS, key=KEYS)
    def contains(self, ns: str, key: bytes) -> None:
        found = self.store.call("contains", key, ns=ns)
        may = self._may(ns, key)
        if ns == "p":
            assert found in {v is not None for v in may}
        elif may == {None}:
            assert not found

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = StoreProcess(self.dir, **BUDGETS)

    @rule()
    def crash(self) -> None:
        self.store.kill()
        self._forget_cache()
        self.store = StoreProcess(self.dir, **BUDGETS)

    @rule(ns=NS, key=KEYS, value=VALUES, delay=st.sampled_from([0.0, 0.0005, 0.002]))
    def crash_during_put(self, ns: str, key: bytes, value: bytes, delay: float) -> None:
        self.store.send_and_kill(delay, "put", key, value, ns=ns)
        self.model[ns][key] = self._may(ns, key) | {value}
        self._forget_cache()
        self.store = StoreProcess(self.dir, **BUDGETS)

    def _forget_cache(self) -> None:
        for key in self.model["c"]:
            self.model["c"][key] = self.model["c"][key] | {None}

    @invariant()
    def within_budgets(self) -> None:
        st_ = self.store.call("stats")
        assert st_["hot"]["bytes"] <= st_["hot"]["capacity_bytes"]
        assert st_["warm"]["bytes"] <= st_["warm"]["capacity_bytes"]
        assert st_["cold"]["bytes"] <= st_["cold"]["capacity_bytes"]
        assert st_["hot"]["checksum_failures"] == st_["warm"]["checksum_failures"] == 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


StoreMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestStoreModel = StoreMachine.TestCase
