"""The store against a plain dict model ("a dict that may forget"), with close/reopen steps."""

from __future__ import annotations

import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.conftest import open_store

KEYS = st.sampled_from([b"k%d" % i for i in range(12)])
VALUES = st.one_of(st.binary(max_size=64), st.binary(min_size=3000, max_size=30_000))
NS = st.sampled_from(["c", "p"])
BUDGETS = {"hot_bytes": 48 << 10, "warm_bytes": 64 << 10, "cold_bytes": 1 << 20}


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="memstore-model-")
        self.store = open_store(self.dir, **BUDGETS)
        self.store.create_namespace("c")
        self.store.create_namespace("p", durability="persistent")
        self.model: dict[str, dict[bytes, bytes]] = {"c": {}, "p": {}}

    @rule(ns=NS, key=KEYS, value=VALUES)
    def put(self, ns: str, key: bytes, value: bytes) -> None:
        self.store.put(key, value, ns=ns)
        self.model[ns][key] = value

    @rule(ns=NS, key=KEYS)
    def get(self, ns: str, key: bytes) -> None:
        got = self.store.get(key, ns=ns)
        want = self.model[ns].get(key)
        if ns == "p":
            assert got == want
        else:
            assert got is None or got == want
            if got is None:
                self.model[ns].pop(key, None)  # forgotten: it must never come back

    @rule(ns=NS, keys=st.lists(KEYS, max_size=5))
    def get_many(self, ns: str, keys: list[bytes]) -> None:
        got = self.store.get_many(keys, ns=ns, promote=False)
        for k, v in zip(keys, got, strict=True):
            want = self.model[ns].get(k)
            assert v == want or (ns == "c" and v is None)

    @rule(ns=NS, key=KEYS)
    def delete(self, ns: str, key: bytes) -> None:
        existed = self.store.delete(key, ns=ns)
        if ns == "p":
            assert existed == (key in self.model[ns])
        self.model[ns].pop(key, None)

    @rule(ns=NS, key=KEYS)
    def contains(self, ns: str, key: bytes) -> None:
        if ns == "p":
            assert self.store.contains(key, ns=ns) == (key in self.model[ns])
        elif key not in self.model[ns]:
            assert not self.store.contains(key, ns=ns)

    @precondition(lambda self: True)
    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = open_store(self.dir, **BUDGETS)

    @invariant()
    def within_budgets(self) -> None:
        st_ = self.store.stats()
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
