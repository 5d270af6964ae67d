"""Retention hints: honoured where given, the policy's own order where not; through the store, gRPC (raw
bytes too) and tenants."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os

import grpc
import pytest

from memstore import Client, TieredStore, tenancy
from memstore.errors import InvalidValueError
from memstore.explain import explain
from memstore.policy import LRU
from memstore.retention import Hint, Retention
from memstore.v1 import memstore_pb2 as pb
from tests.conftest import MiB


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lru(*keys: str) -> LRU:
    policy = LRU()
    for k in keys:
        policy.insert(k)
    return policy


def _victim(r: Retention, policy: LRU, held: set[str]) -> object:
    return r.victim(policy.victim, lambda k: False, held)


def test_hints_come_before_the_policy_and_unhinted_keys_keep_its_order() -> None:
    clock = Clock()
    r = Retention(clock)
    policy = _lru("a", "b", "c", "d")
    held = {"a", "b", "c", "d"}
    assert _victim(r, policy, held) == "a"  # no hints: exactly the policy
    r.hint(["a"], Hint(priority=5))
    assert _victim(r, policy, held) == "b"  # a hinted block outlives unhinted ones
    r.hint(["d"], Hint(priority=-1))
    assert _victim(r, policy, held) == "d"  # a negative priority goes first
    r.hint(["b", "c"], Hint(ttl=60))
    policy.remove("d"), held.discard("d")
    assert _victim(r, policy, held) == "a"  # every block protected: the policy's order over them
    clock.now += 61
    assert _victim(r, policy, held) in {"b", "c"}  # their lifetime passed: first to go
    assert r.reason("b") == "expired"


def test_an_ended_session_goes_first_but_a_shared_prefix_stays() -> None:
    r = Retention(Clock())
    policy = _lru("shared", "mine", "theirs", "plain")
    held = {"shared", "mine", "theirs", "plain"}
    r.hint(["shared", "mine"], Hint(session="s1"))
    r.hint(["shared", "theirs"], Hint(session="s2"))
    assert _victim(r, policy, held) == "plain"  # open sessions are kept over unhinted blocks
    assert r.end_session("s1") == 1  # "shared" is still used by s2
    assert _victim(r, policy, held) == "mine"
    held.discard("mine"), r.forget("mine"), policy.remove("mine")
    assert _victim(r, policy, held) == "plain"  # "shared" stays while s2 is open
    assert r.end_session("s2") == 2
    assert _victim(r, policy, held) in {"shared", "theirs"}
    assert r.end_session("never-opened") == 0


def test_a_paused_session_waits_behind_unhinted_blocks_tail_first_until_it_is_back() -> None:
    r = Retention(Clock())
    policy = _lru("sys", "a1", "a2", "b1", "plain")
    held = {"sys", "a1", "a2", "b1", "plain"}
    r.hint(["sys", "a1", "a2"], Hint(session="a"))
    r.hint(["sys", "b1"], Hint(session="b"))
    assert r.pause_session("a") == 2  # "sys" is shared with b, which runs
    assert r.reason("a2") == "paused" and r.reason("sys") == ""
    assert _victim(r, policy, held) == "plain"  # unhinted blocks still go before a paused session's
    held.discard("plain"), policy.remove("plain")
    assert _victim(r, policy, held) == "a2"  # then the paused session's tail, before its head
    r.hint(["sys", "a1", "a2"], Hint(session="a"))  # its next turn: back
    assert r.reason("a2") == "" and "a" not in r.paused
    assert _victim(r, policy, held) == "sys"  # every block runs again: the policy's order
    assert r.pause_session("b") == 1 and r.pause_session("a") == 3  # now "sys" waits as well
    assert _victim(r, policy, held) == "b1"  # paused first, gone first
    assert r.end_session("a") == 2  # ending a paused session: its own blocks go first
    assert _victim(r, policy, held) in {"a1", "a2"}
    assert r.pause_session("never-opened") == 0


def test_the_session_paused_first_goes_first_and_its_lifetime_keeps_a_block() -> None:
    clock = Clock()
    r = Retention(clock)
    policy = _lru("old", "new", "kept")
    held = {"old", "new", "kept"}
    r.hint(["old"], Hint(session="s1"))
    r.hint(["new"], Hint(session="s2"))
    r.hint(["kept"], Hint(session="s3", ttl=60))
    r.pause_session("s1"), r.pause_session("s2"), r.pause_session("s3")
    assert _victim(r, policy, held) == "old"
    assert r.reason("kept") == ""  # a lifetime not yet passed keeps it out of the waiting line
    clock.now += 61
    held.discard("old"), r.forget("old"), policy.remove("old")
    held.discard("new"), r.forget("new"), policy.remove("new")
    assert _victim(r, policy, held) == "kept" and r.reason("kept") == "paused"


def test_sessions_that_say_when_they_return_wait_by_it_the_latest_first() -> None:
    clock = Clock()
    r = Retention(clock)
    keys = ("sys", "soon1", "soon2", "late1", "mid1", "guess1", "plain")
    policy, held = _lru(*keys), set(keys)
    r.hint(["sys", "soon1", "soon2"], Hint(session="soon"))
    r.hint(["sys", "late1"], Hint(session="late"))
    r.hint(["mid1"], Hint(session="mid"))
    r.hint(["guess1"], Hint(session="guess"))
    assert r.pause_session("soon", resume_in=5) == 2  # "sys": "late" still runs
    assert r.pause_session("late", resume_in=90) == 2  # now "sys" waits too, for "soon"
    assert r.pause_session("mid", resume_in=30) == 1
    assert r.pause_session("guess") == 1  # no estimate
    assert all(r.reason(k) == "paused" for k in keys[:-1])

    def take() -> object:
        key = _victim(r, policy, held)
        held.discard(key), r.forget(key), policy.remove(key)  # type: ignore[func-returns-value]
        return key

    assert take() == "plain"  # unhinted blocks still go first
    assert take() == "guess1"  # then sessions that gave no estimate
    assert take() == "late1"  # then the latest return: "sys" is shared with "soon", due in 5 s
    assert take() == "mid1"
    assert [take(), take()] == ["soon2", "soon1"]  # a session's tail before its head
    assert take() == "sys"


def test_an_estimate_changes_with_the_sessions_that_wait_and_goes_when_they_resume() -> None:
    clock = Clock()
    r = Retention(clock)
    policy, held = _lru("sys", "a1", "b1"), {"sys", "a1", "b1"}
    r.hint(["sys", "a1"], Hint(session="a"))
    r.hint(["sys", "b1"], Hint(session="b"))
    r.pause_session("a", resume_in=60), r.pause_session("b", resume_in=10)
    assert r.waiting_of["sys"][0] == -(clock.now + 10)  # shared: it waits for the earliest
    assert _victim(r, policy, held) == "a1"
    assert r.end_session("b") == 1  # b ends: "sys" now waits for a alone
    assert r.waiting_of["sys"][0] == -(clock.now + 60)
    r.pause_session("a", resume_in=1)  # a new estimate replaces the old
    assert r.waiting_of["a1"][0] == -(clock.now + 1) and r.pause_session("a", resume_in=1) == 0
    r.hint(["a1"], Hint(session="a"))  # back: nothing of it waits
    assert not r.waits("sys") and not r.waits("a1") and "a" not in r.back_at
    assert _victim(r, policy, held) == "b1"  # b's ended block
    for _ in range(300):  # entries left behind by resumed sessions are dropped, not kept forever
        r.pause_session("a", resume_in=5), r.hint(["sys", "a1"], Hint(session="a"))
    assert len(r.waiting) < 2 * len(r.waiting_of) + 70


def test_a_tier_of_open_sessions_gives_up_a_paused_block_without_walking_them_all() -> None:
    from memstore.retention import SCAN

    n = 4 * SCAN
    r = Retention(Clock())
    keys = [f"k{i}" for i in range(n)]
    policy, held = _lru(*keys, "deep"), {*keys, "deep"}
    for i in range(0, n, 8):  # 8 blocks a session, every session open
        r.hint(keys[i : i + 8], Hint(session=f"s{i}"))
    looks = 0

    def skip(key: object) -> bool:
        nonlocal looks
        looks += 1
        return False

    assert r.victim(policy.victim, skip, held) == "deep"  # nothing waits: the whole walk, as before
    assert looks > n
    r.pause_session("s8")
    looks = 0
    assert r.victim(policy.victim, skip, held) == "k15"  # the paused tail, before the unhinted "deep"
    assert looks < 2 * SCAN + 16  # ... found without a look at every block the tier holds


def test_bad_hints_are_refused() -> None:
    for bad in ({"ttl": -1.0}, {"ttl": float("nan")}, {"priority": 5000}, {"session": "x" * 300}):
        with pytest.raises(InvalidValueError):
            Hint(**bad)  # type: ignore[arg-type]
    r = Retention(Clock())
    r.hint(["k"], Hint(session="s"))
    for resume_in in (-1.0, float("nan"), 1e12):
        with pytest.raises(InvalidValueError):
            r.pause_session("s", resume_in=resume_in)
    assert not r.paused and not r.waits("k")  # a refused pause changes nothing


def _fill(s: TieredStore, prefix: bytes, n: int, ns: str = "c") -> list[bytes]:
    keys = [prefix + b"%d" % i for i in range(n)]
    for k in keys:
        s.put(k, os.urandom(256 << 10), ns=ns)
    return keys


def test_in_the_store_a_hinted_block_outlives_a_flood_and_an_ended_session_goes_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with TieredStore(str(tmp_path / "s"), hot_bytes=0, warm_bytes=0, cold_bytes=8 * MiB) as s:
        s.create_namespace("c", warm_codec="raw", cold_codec="raw")
        kept = _fill(s, b"kept", 4)
        assert s.retain([*kept, b"absent"], Hint(priority=1), ns="c") == 4  # only stored keys
        _fill(s, b"flood", 40)  # several times the cold budget
        s.flush()
        assert all(s.contains(k, ns="c") for k in kept)
        session = _fill(s, b"sess", 4)
        s.retain(session, Hint(session="chat"), ns="c")
        assert s.end_session("chat") == 4
        s.put(b"one-more", os.urandom(256 << 10), ns="c")
        s.flush()
        gone = [k for k in session if not s.contains(k, ns="c")]
        assert gone, "an ended session's block should have made room first"
        why = explain(s, gone[0], ns="c")
        assert (why.state, why.detail) == ("evicted", "its sessions ended")
        s.create_namespace("p", durability="persistent")
        s.put(b"k", b"v", ns="p")
        with pytest.raises(InvalidValueError):
            s.retain([b"k"], Hint(priority=1), ns="p")


def test_in_the_store_a_paused_session_makes_room_before_a_running_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with TieredStore(str(tmp_path / "s"), hot_bytes=0, warm_bytes=0, cold_bytes=8 * MiB) as s:
        s.create_namespace("c", warm_codec="raw", cold_codec="raw")
        waiting, running = _fill(s, b"wait", 8), _fill(s, b"run", 8)
        s.flush()
        assert all(s.contains(k, ns="c") for k in waiting + running)
        s.retain(waiting, Hint(session="tool-call"), ns="c")
        s.retain(running, Hint(session="thinking"), ns="c")
        assert s.end_session("tool-call", pause=True) == 8
        for i in range(8):  # the running session grows, a block a turn
            s.retain(_fill(s, b"new%d-" % i, 1), Hint(session="thinking"), ns="c")
        s.flush()
        assert all(s.contains(k, ns="c") for k in running)
        gone = [k for k in waiting if not s.contains(k, ns="c")]
        assert gone and gone == waiting[-len(gone) :]  # its tail went first: what stays is a prefix
        assert explain(s, gone[0], ns="c").detail == "its sessions were paused"


def test_an_expired_lifetime_is_what_explain_reports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with TieredStore(str(tmp_path / "s"), hot_bytes=0, warm_bytes=0, cold_bytes=8 * MiB) as s:
        s.create_namespace("c", warm_codec="raw", cold_codec="raw")
        clock = Clock()
        s.retention.clock = clock
        short = _fill(s, b"short", 2)
        s.retain(short, Hint(ttl=30), ns="c")
        clock.now += 31
        _fill(s, b"flood", 40)
        s.flush()
        states = {explain(s, k, ns="c").state for k in short}
        assert states == {"expired"}


def test_hints_through_grpc_stay_inside_the_tenant(two_tenants) -> None:  # type: ignore[no-untyped-def]
    target, tokens, store = two_tenants
    with Client(target, token=tokens["alice"], local="never", data="never") as alice:
        alice.put_many([(b"a", b"1"), (b"b", b"2")], hint=Hint(session="s1", ttl=300))
        assert alice.tiers([b"a", b"zz"], hint=Hint(session="s1")) == ["hot", None]
    with Client(target, token=tokens["bob"], local="never") as bob:
        assert bob.end_session("s1") == 0  # bob's "s1" is not alice's
    assert store.retention.sessions.keys() == {"alice/s1"}
    with Client(target, token=tokens["alice"], local="never") as alice:
        assert alice.end_session("s1") == 2
        alice.put_many([(b"w", b"4")], hint=Hint(session="tool"))
        assert alice.end_session("tool", pause=True, resume_in=30) == 1
        assert store.retention.paused == {"alice/tool"}
        assert set(store.retention.back_at) == {"alice/tool"}  # its estimate came through
        with Client(target, token=tokens["bob"], local="never") as bob:
            assert bob.end_session("tool") == 0  # nor is her paused session his to end
        assert alice.tiers([b"w"], hint=Hint(session="tool")) == ["hot"]  # named again: it is back
        assert store.retention.paused == set()
        alice.put_many([(b"c", b"3")], hint=Hint(priority=2))  # over the data plane, then hinted
    assert store.retention.priority == {tenancy.key_prefix("alice#default") + b"c": 2}


def test_raw_bad_hints_get_invalid_argument(two_tenants) -> None:  # type: ignore[no-untyped-def]
    target, tokens, store = two_tenants
    md = [("authorization", f"Bearer {tokens['alice']}")]
    with grpc.insecure_channel(target) as ch:
        lookup = ch.unary_unary("/memstore.v1.Store/Lookup")
        end = ch.unary_unary("/memstore.v1.Store/EndSession")
        for hint in (pb.RetentionHint(ttl_seconds=-5), pb.RetentionHint(session="x" * 129)):
            with pytest.raises(grpc.RpcError) as info:
                lookup(pb.KeysRequest(keys=[b"k"], hint=hint).SerializeToString(), metadata=md, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        store.put(b"k", b"v", ns="alice#default")
        hinted = pb.KeysRequest(keys=[b"k"], hint=pb.RetentionHint(session="s"))
        lookup(hinted.SerializeToString(), metadata=md, timeout=10)
        assert set(store.retention.sessions) == {"alice/s"}  # a session the bad pauses below name
        for bad in (
            pb.EndSessionRequest(),  # no session
            pb.EndSessionRequest(session="s", resume_in_seconds=5),  # an estimate with no pause
            pb.EndSessionRequest(session="s", pause=True, resume_in_seconds=-5),
            pb.EndSessionRequest(session="s", pause=True, resume_in_seconds=float("inf")),
        ):
            with pytest.raises(grpc.RpcError) as info:
                end(bad.SerializeToString(), metadata=md, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert not store.retention.paused and not store.retention.back_at  # nothing paused by them
        # a PutChunk's hint: a bad one refuses the call and stores nothing; a good one is applied
        put = ch.stream_unary("/memstore.v1.Store/Put")
        item = pb.PutItem(key=b"p", size=1, length=1)
        bad = pb.PutChunk(items=[item], hint=pb.RetentionHint(ttl_seconds=-1), data=b"x")
        with pytest.raises(grpc.RpcError) as info:
            put(iter([bad.SerializeToString()]), metadata=md, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert not store.contains(b"p", ns="alice#default")
        good = pb.PutChunk(items=[item], hint=pb.RetentionHint(priority=4), data=b"x")
        assert (
            pb.PutResponse.FromString(put(iter([good.SerializeToString()]), metadata=md, timeout=10)).stored
            == 1
        )
    assert store.retention.priority == {tenancy.key_prefix("alice#default") + b"p": 4}


def test_the_replay_reads_session_hints_from_a_trace() -> None:
    """B's blocks are older than A's, so LRU alone gives B's up; told that A ended, it gives A's."""
    from memstore.replay import Request, replay

    trace = [
        Request(0, 1024, (3, 4), session="b"),
        Request(1, 1024, (1, 2), session="a", end_session=True),
        Request(2, 1024, (5, 6), session="c"),
        Request(3, 1024, (3, 4), session="b"),
    ]
    plain = replay(trace, "lru", 4, block_tokens=512)
    hinted = replay(trace, "lru", 4, block_tokens=512, hints=True)
    assert plain.prefix_tokens == 0
    assert hinted.prefix_tokens == 1024  # B's second turn found both blocks


def test_the_replay_reads_session_pauses_from_a_trace(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A pauses for a tool call; its blocks make room for C, where LRU alone would give B's up."""
    from bench.agent_trace import as_json
    from memstore.replay import Request, load_trace, replay

    trace = [
        Request(0, 1024, (3, 4), session="b"),
        Request(1, 1024, (1, 2), session="a", pause_session=True),
        Request(2, 1024, (5, 6), session="c"),
        Request(3, 1024, (3, 4), session="b"),
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(as_json(r)) + "\n" for r in trace))
    assert load_trace(str(path)) == trace
    ends_only = replay(
        [Request(r.timestamp, r.input_length, r.hash_ids, session=r.session) for r in trace],
        "lru",
        4,
        hints=True,
    )
    assert ends_only.prefix_tokens == 0
    assert replay(trace, "lru", 4, block_tokens=512, hints=True).prefix_tokens == 1024


def test_the_replay_reads_return_estimates_from_a_trace(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A and B both pause; C needs room. With no estimates A, paused first, goes first; told that A is
    back in 5 s and B in 60 s, the cache gives B's blocks up, and A's next turn finds both of its own."""
    from bench.agent_trace import as_json
    from memstore.replay import Request, load_trace, replay

    trace = [
        Request(0, 1024, (1, 2), session="a", pause_session=True, resume_in=5.0),
        Request(1, 1024, (3, 4), session="b", pause_session=True, resume_in=60.0),
        Request(2, 1024, (5, 6), session="c", end_session=True),
        Request(5000, 1024, (1, 2), session="a"),
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(as_json(r)) + "\n" for r in trace))
    assert load_trace(str(path)) == trace
    unknown = [
        Request(r.timestamp, r.input_length, r.hash_ids, session=r.session, pause_session=r.pause_session)
        for r in trace
    ]
    assert replay(unknown, "lru", 4, block_tokens=512, hints=True).prefix_tokens == 0
    assert replay(trace, "lru", 4, block_tokens=512, hints=True).prefix_tokens == 1024


def test_the_agent_trace_generator() -> None:
    from bench.agent_trace import AgentTraceParams, as_json, generate

    trace = generate(AgentTraceParams(sessions=30, concurrency=5, seed=3))
    assert trace == generate(AgentTraceParams(sessions=30, concurrency=5, seed=3))  # seeded
    by_session = _sessions(trace)
    assert len(by_session) == 30
    firsts = set()
    pauses = 0
    for turns in by_session.values():
        assert [t.end_session for t in turns] == [False] * (len(turns) - 1) + [True]
        assert not turns[-1].pause_session
        pauses += sum(t.pause_session for t in turns)
        for before, after in itertools.pairwise(turns):  # each prompt extends the one before it
            assert after.hash_ids[: len(before.hash_ids)] == before.hash_ids
            assert len(after.hash_ids) > len(before.hash_ids) and after.timestamp > before.timestamp
        firsts.add(turns[0].hash_ids[0])
    assert len(firsts) < 30  # system prompts are shared
    assert 0 < pauses < len(trace)  # some turns end in a tool call
    assert all((r.resume_in > 0) == r.pause_session for r in trace)  # each pause with an estimate
    exact = generate(AgentTraceParams(sessions=30, concurrency=5, seed=3, estimate_spread=0.0))
    assert [dataclasses.replace(r, resume_in=0.0) for r in exact] == [
        dataclasses.replace(r, resume_in=0.0) for r in trace
    ]  # the estimates' spread leaves the trace itself as it was
    following = {id(a): b for turns in _sessions(exact).values() for a, b in itertools.pairwise(turns)}
    for r in exact:  # with no spread, an estimate is the tool's real time
        if r.pause_session:
            assert r.resume_in == pytest.approx((following[id(r)].timestamp - r.timestamp) / 1000, abs=1e-3)
    assert [r.timestamp for r in trace] == sorted(r.timestamp for r in trace)
    assert as_json(trace[0])["session"] == trace[0].session


def _sessions(trace):  # type: ignore[no-untyped-def]
    by_session: dict[str, list] = {}
    for r in trace:
        by_session.setdefault(r.session, []).append(r)
    return by_session
