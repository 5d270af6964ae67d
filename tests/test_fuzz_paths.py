"""Stateful fuzzing of the two paths where a caller holds state on the server: shared-memory reservations
(begin, write or not, commit with right, wrong or foreign tokens and checksums, abort) and agent memory
(put with and without compare-and-set, soft and hard delete, history), by one tenant against a real
server with tokens on, while another tenant's records sit under the very names the fuzzer uses.

After every step the fuzzer's reads match a model of what it was acknowledged; a Get never returns
bytes that were not committed with their checksum; every refusal has the status the README gives for
it; and the other tenant's records, reservation and memory are untouched."""

from __future__ import annotations

import json
from typing import Any

import grpc
import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from memstore import Client, RemoteError, TieredStore
from memstore.local import LocalArena
from memstore.v1 import memstore_pb2 as pb
from memstore_server import create_server
from memstore_server.auth import create_token
from tests.conftest import MiB, status_of

KEYS = [b"sentinel", b"r1", b"r2", b"r3"]
SIZES = [1, 100, 4096, 65536, 300_000]
MEM_NS = [("shared",), ("shared", "x"), ("a",)]
MEM_KEYS = ["s", "k1", "k2"]
VICTIM_VALUE = b"the victim's bytes"
VICTIM_MEMORY = {"secret": "the victim's memory"}


class World:
    """One server, two tenants: ``fuzz`` (admin, the fuzzer) and ``victim`` (its sentinels)."""

    def __init__(self, tmp: Any) -> None:
        tokens = str(tmp / "tokens.jsonl")
        self.fuzz_token = create_token(tokens, "fuzz", "admin")
        self.victim_token = create_token(tokens, "victim", "admin")
        self.store = TieredStore(
            str(tmp / "store"), hot_bytes=16 * MiB, warm_bytes=8 * MiB, cold_bytes=128 * MiB, prefault=False
        )
        self.target = f"unix:{tmp}/fuzz.sock"
        self.running = create_server(self.store, self.target, auth_tokens=tokens)
        self.channel = grpc.insecure_channel(self.target)
        self.fuzz = Client(self.target, token=self.fuzz_token, local="never", retries=0)
        self.victim = Client(self.target, token=self.victim_token, local="never", retries=0)
        self.victim.put(b"sentinel", VICTIM_VALUE)
        self.victim.memory.put(("shared",), "s", VICTIM_MEMORY)
        opened = pb.OpenLocalResponse.FromString(self.call("OpenLocal", pb.OpenLocalRequest()))
        self.arena = LocalArena(
            opened.segment_path,
            opened.segment_size,
            server_boot_id=opened.boot_id,
            server_pid=opened.server_pid,
        )
        # An open reservation of the victim's, with its bytes written: the fuzzer is told its token.
        item = pb.PutItem(key=b"r1", size=len(VICTIM_VALUE))
        begin = pb.LocalPutBeginRequest(items=[item], lease_ms=600_000)
        raw = self.call("LocalPutBegin", begin, self.victim_token)
        got = pb.LocalPutBeginResponse.FromString(raw).reserved[0]
        assert got.ok
        self.arena.write(got.offset, memoryview(VICTIM_VALUE))
        self.victim_reservation = got.token

    def call(self, method: str, msg: Any, token: str | None = None) -> bytes:
        md = (("authorization", f"Bearer {token or self.fuzz_token}"),)
        stub = self.channel.unary_unary(f"/memstore.v1.Store/{method}")
        return stub(msg.SerializeToString(), metadata=md, timeout=30)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.arena.close()
        self.fuzz.close()
        self.victim.close()
        self.channel.close()
        self.running.stop(1)
        self.store.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    w = World(tmp_path_factory.mktemp("paths"))
    yield w
    w.close()


def test_fuzzed_reservations_and_memory_keep_every_promise(world: World) -> None:
    class Paths(RuleBasedStateMachine):
        reservations = Bundle("reservations")

        def __init__(self) -> None:
            super().__init__()
            self.committed: dict[bytes, bytes] = {}  # what the fuzzer's Get may return per key
            self.written: dict[int, bytes] = {}  # token -> bytes written into its space
            self.key_of: dict[int, tuple[bytes, int, int]] = {}  # token -> (key, size, offset)
            self.memory: dict[tuple[tuple[str, ...], str], tuple[Any, int] | None] = {}

        @rule(target=reservations, key=st.sampled_from(KEYS), size=st.sampled_from(SIZES))
        def begin(self, key: bytes, size: int) -> int:
            got = pb.LocalPutBeginResponse.FromString(
                world.call("LocalPutBegin", pb.LocalPutBeginRequest(items=[pb.PutItem(key=key, size=size)]))
            ).reserved[0]
            if not got.ok:
                return 0
            assert got.token not in self.key_of and got.token != world.victim_reservation
            self.key_of[got.token] = (key, size, got.offset)
            return got.token  # type: ignore[no-any-return]

        @rule(token=reservations, seed=st.integers(0, 2**32 - 1), whole=st.booleans())
        def write(self, token: int, seed: int, whole: bool) -> None:
            if token not in self.key_of:
                return
            _key, size, offset = self.key_of[token]
            data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
            cut = data if whole else data[: size // 2]
            world.arena.write(offset, memoryview(cut))
            before = self.written.get(token, b"")
            # What the space holds now, as far as the fuzzer knows it (a half write over a whole one).
            self.written[token] = cut + before[len(cut) :] if len(before) > len(cut) else cut

        @rule(
            token=consumes(reservations),
            how=st.sampled_from(["right", "wrong", "foreign", "twice", "no-checksum", "abort"]),
        )
        def commit(self, token: int, how: str) -> None:
            if token not in self.key_of:
                token = 0
            key, size, _offset = self.key_of.pop(token, (b"", 0, 0))
            written = self.written.pop(token, None)
            right = written is not None and len(written) == size
            checksum = xxhash.xxh3_64_intdigest(written or b"")
            if how == "abort":
                world.call("LocalPutCommit", pb.LocalPutCommitRequest(abort=[token]))
                return
            if how == "foreign":
                msg = pb.LocalPutCommitRequest(commit=[world.victim_reservation], checksums=[0])
                assert status_of(lambda: world.call("LocalPutCommit", msg)) == grpc.StatusCode.NOT_FOUND
                abort = pb.LocalPutCommitRequest(abort=[world.victim_reservation])
                world.call("LocalPutCommit", abort)  # accepted, and does nothing to it
                msg = pb.LocalPutCommitRequest(abort=[token])
                world.call("LocalPutCommit", msg)
                return
            if how == "twice":
                msg = pb.LocalPutCommitRequest(commit=[token, token], checksums=[checksum, checksum])
                assert (
                    status_of(lambda: world.call("LocalPutCommit", msg)) == grpc.StatusCode.INVALID_ARGUMENT
                )
                world.call("LocalPutCommit", pb.LocalPutCommitRequest(abort=[token]))
                return
            if how == "no-checksum":
                msg = pb.LocalPutCommitRequest(commit=[token])
                assert (
                    status_of(lambda: world.call("LocalPutCommit", msg)) == grpc.StatusCode.INVALID_ARGUMENT
                )
                world.call("LocalPutCommit", pb.LocalPutCommitRequest(abort=[token]))
                return
            if how == "wrong":
                checksum ^= 1
            msg = pb.LocalPutCommitRequest(commit=[token], checksums=[checksum])
            code = status_of(lambda: world.call("LocalPutCommit", msg))
            if token == 0:
                assert code == grpc.StatusCode.NOT_FOUND
            elif how == "right" and right:
                assert code is None
                assert written is not None
                self.committed[key] = written
            else:
                # Unwritten, half written or a wrong checksum: refused, and the space given back.
                assert code == grpc.StatusCode.FAILED_PRECONDITION, (how, right)
                assert status_of(lambda: world.call("LocalPutCommit", msg)) == grpc.StatusCode.NOT_FOUND

        @rule(key=st.sampled_from(KEYS))
        def get(self, key: bytes) -> None:
            got = world.fuzz.get(key)
            assert got is None or got == self.committed.get(key), key  # never bytes it did not commit

        @rule(
            ns=st.sampled_from(MEM_NS),
            key=st.sampled_from(MEM_KEYS),
            value=st.one_of(st.integers(), st.text(max_size=20), st.just({"secret": "mine"})),
            cas=st.sampled_from([None, "right", "wrong"]),
        )
        def memory_put(self, ns: tuple[str, ...], key: str, value: Any, cas: str | None) -> None:
            known = self.memory.get((ns, key), ("never", 0))
            if cas is not None and known is None:
                cas = None  # after a soft delete, compare-and-set is not modelled
            kw = {}
            if cas is not None:
                assert known is not None
                kw["if_version"] = known[1] + (cas == "wrong")
            try:
                version = world.fuzz.memory.put(ns, key, value, **kw)
            except RemoteError as exc:
                assert cas == "wrong" and exc.code == grpc.StatusCode.FAILED_PRECONDITION, exc
                return
            assert cas != "wrong"
            assert known is None or version > known[1]
            self.memory[(ns, key)] = (value, version)

        @rule(ns=st.sampled_from(MEM_NS), key=st.sampled_from(MEM_KEYS), hard=st.booleans())
        def memory_delete(self, ns: tuple[str, ...], key: str, hard: bool) -> None:
            world.fuzz.memory.delete(ns, key, hard=hard)
            if hard:
                self.memory.pop((ns, key), None)
            elif (ns, key) in self.memory:
                self.memory[(ns, key)] = None

        @rule(ns=st.sampled_from(MEM_NS), key=st.sampled_from(MEM_KEYS))
        def memory_read(self, ns: tuple[str, ...], key: str) -> None:
            rec = world.fuzz.memory.get(ns, key)
            known = self.memory.get((ns, key))
            if known is None:
                assert rec is None
                return
            assert rec is not None and json.dumps(rec.value) == json.dumps(known[0])
            assert rec.version == known[1]
            versions = [r.version for r in world.fuzz.memory.history(ns, key)]
            assert versions == sorted(set(versions)) and versions[-1] == known[1]

        @invariant()
        def victim_untouched(self) -> None:
            assert world.victim.get(b"sentinel") == VICTIM_VALUE
            rec = world.victim.memory.get(("shared",), "s")
            assert rec is not None and rec.value == VICTIM_MEMORY and rec.version == 1

        def teardown(self) -> None:
            for token in self.key_of:
                world.call("LocalPutCommit", pb.LocalPutCommitRequest(abort=[token]))
            for key in KEYS:
                world.fuzz.delete(key)
            for ns, key in list(self.memory):
                world.fuzz.memory.delete(ns, key, hard=True)

    Paths.TestCase.settings = settings(
        max_examples=30, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)
    )
    Paths.TestCase().runTest()
    # The victim's reservation survived every foreign commit and abort: it still publishes its bytes.
    msg = pb.LocalPutCommitRequest(
        commit=[world.victim_reservation], checksums=[xxhash.xxh3_64_intdigest(VICTIM_VALUE)]
    )
    world.call("LocalPutCommit", msg, world.victim_token)
    assert world.victim.get(b"r1") == VICTIM_VALUE
    assert world.fuzz.get(b"r1") is None
