"""Each unary RPC of the Store service as a ``Unary``: its request, and how its answer is read. Sans
I/O: the blocking and the asyncio client run them (``memstore.client``, ``memstore.aio_client``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from memstore.explain import Explanation, identity_dict
from memstore.retention import Hint
from memstore.tier import TIER_COUNTERS
from memstore.v1 import memstore_pb2 as pb

R = TypeVar("R")
_DURABILITY = {"cache": pb.CACHE, "persistent": pb.PERSISTENT}
_TIER_FIELDS = (*TIER_COUNTERS, "compression_ratio", "map_bytes", "published", "errors")


_TIER_NAMES = {pb.TIER_NONE: None, pb.HOT: "hot", pb.WARM: "warm", pb.COLD: "cold", pb.POOL: "pool"}


_PREFETCH_MODES = {"wait_complete": pb.WAIT_COMPLETE, "best_effort": pb.BEST_EFFORT, "timeout": pb.TIMEOUT}


def _prefetch_request(keys: Iterable[bytes], ns: str, mode: str, wait: float | None) -> bytes:
    if mode not in _PREFETCH_MODES:
        raise ValueError(f"mode is one of {sorted(_PREFETCH_MODES)}, not {mode!r}")
    return pb.PrefetchRequest(
        namespace=ns, keys=list(keys), mode=_PREFETCH_MODES[mode], timeout_ms=int((wait or 0) * 1000)
    ).SerializeToString()


def _keys_request(keys: Iterable[bytes], ns: str) -> bytes:
    return pb.KeysRequest(namespace=ns, keys=list(keys)).SerializeToString()


def _namespace_answer(raw: bytes) -> dict[str, Any]:
    ns = pb.CreateNamespaceResponse.FromString(raw).namespace
    durability = "persistent" if ns.durability == pb.PERSISTENT else "cache"
    return {
        "name": ns.name,
        "durability": durability,
        "warm_codec": ns.warm_codec,
        "cold_codec": ns.cold_codec,
        "shared": ns.shared,
        "identity": ns.identity,
    }


def _stats_dict(resp: pb.StatsResponse) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in resp.tiers:
        out[t.name] = {f: getattr(t, f) for f in _TIER_FIELDS}
        out[t.name]["compression_ratio"] = t.compression_ratio or None
    if "cold" in out:
        out["cold"]["reader_slots"] = resp.cold_reader_slots
    out.update(
        namespaces=resp.namespaces, pinned=resp.pinned, policy=resp.policy, hot_segment=resp.hot_segment
    )
    out["scope"] = resp.scope or None  # None: the whole store's figures (an admin caller)
    out["tenants"] = {
        u.tenant: {f.name: getattr(u, f.name) for f in u.DESCRIPTOR.fields if f.name != "tenant"}
        for u in resp.tenants
    }
    return out


# ---- unary operations ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unary(Generic[R]):
    """One unary call: the client's RPC handle (an attribute name), the request, how to read the answer."""

    rpc: str
    request: bytes
    parse: Callable[[bytes], R]


def create_namespace_call(
    name: str,
    durability: str,
    warm_codec: str,
    cold_codec: str,
    value_dtype: str | None,
    value_shape: Iterable[int] | None,
    shared: bool = False,
    identity: str = "",
) -> Unary[dict[str, Any]]:
    if durability not in _DURABILITY:
        raise ValueError(f"durability is 'cache' or 'persistent', not {durability!r}")
    req = pb.CreateNamespaceRequest(
        name=name,
        durability=_DURABILITY[durability],
        warm_codec=warm_codec,
        cold_codec=cold_codec,
        shared=shared,
        identity=identity,
    )
    if value_dtype is not None:
        req.value_layout.dtype = value_dtype
        req.value_layout.shape.extend(value_shape or ())
    return Unary("_create_namespace", req.SerializeToString(), _namespace_answer)


def explain_call(key: bytes, ns: str, identity: Any) -> Unary[Explanation]:
    if identity is not None and not isinstance(identity, str):
        identity = json.dumps(identity_dict(identity), sort_keys=True, separators=(",", ":"))
    req = pb.ExplainRequest(namespace=ns, key=key, identity=identity or "").SerializeToString()

    def parse(raw: bytes) -> Explanation:
        r = pb.ExplainResponse.FromString(raw)
        return Explanation(
            ns or "default",
            key,
            r.state,
            r.tier,
            r.policy,
            None if r.seconds_ago < 0 else r.seconds_ago,
            r.detail,
            r.nearest_namespace,
            {d.field: (json.loads(d.asked), json.loads(d.stored)) for d in r.differences},
        )

    return Unary("_explain", req, parse)


def delete_call(keys: Iterable[bytes], ns: str) -> Unary[list[bool]]:
    return Unary(
        "_delete", _keys_request(keys, ns), lambda raw: list(pb.DeleteResponse.FromString(raw).deleted)
    )


def contains_call(keys: Iterable[bytes], ns: str) -> Unary[list[bool]]:
    return Unary(
        "_exists", _keys_request(keys, ns), lambda raw: list(pb.ExistsResponse.FromString(raw).exists)
    )


def tiers_call(keys: Iterable[bytes], ns: str, hint: Hint | None = None) -> Unary[list[str | None]]:
    """A Lookup; with ``hint``, the stored keys also take the retention hint."""

    def parse(raw: bytes) -> list[str | None]:
        return [_TIER_NAMES[t] for t in pb.LookupResponse.FromString(raw).tiers]

    req = pb.KeysRequest(namespace=ns, keys=list(keys))
    if hint is not None:
        req.hint.CopyFrom(
            pb.RetentionHint(ttl_seconds=hint.ttl, priority=hint.priority, session=hint.session)
        )
    return Unary("_lookup", req.SerializeToString(), parse)


def end_session_call(session: str, pause: bool = False, resume_in: float | None = None) -> Unary[int]:
    msg = pb.EndSessionRequest(session=session, pause=pause, resume_in_seconds=resume_in or 0.0)
    return Unary(
        "_end_session",
        msg.SerializeToString(),
        lambda raw: int(pb.EndSessionResponse.FromString(raw).released),
    )


def prefetch_call(keys: Iterable[bytes], ns: str, mode: str, wait: float | None) -> Unary[int]:
    req = _prefetch_request(keys, ns, mode, wait)
    return Unary("_prefetch", req, lambda raw: int(pb.PrefetchResponse.FromString(raw).in_hot))


def hint_call(ns: str, prefix: bytes) -> Unary[None]:
    req = pb.PrefetchRequest(namespace=ns, hint=True, prefix=prefix).SerializeToString()
    return Unary("_prefetch", req, lambda raw: None)


def pin_call(keys: Iterable[bytes], ns: str, unpin: bool) -> Unary[list[bool]]:
    req = pb.PinRequest(namespace=ns, keys=list(keys), unpin=unpin).SerializeToString()
    return Unary("_pin", req, lambda raw: list(pb.PinResponse.FromString(raw).changed))


def delete_namespace_call(name: str) -> Unary[int]:
    req = pb.DeleteNamespaceRequest(name=name).SerializeToString()
    return Unary(
        "_delete_namespace", req, lambda raw: int(pb.DeleteNamespaceResponse.FromString(raw).removed)
    )


def stats_call() -> Unary[dict[str, Any]]:
    return Unary(
        "_stats",
        pb.StatsRequest().SerializeToString(),
        lambda raw: _stats_dict(pb.StatsResponse.FromString(raw)),
    )


def open_local_call() -> Unary[bytes]:
    return Unary("_open_local", pb.OpenLocalRequest().SerializeToString(), lambda raw: raw)


def open_data_call() -> Unary[pb.OpenDataResponse]:
    return Unary("_open_data", pb.OpenDataRequest().SerializeToString(), pb.OpenDataResponse.FromString)


def get_request(keys: list[bytes], ns: str, promote: bool) -> bytes:
    return pb.GetRequest(namespace=ns, keys=keys, no_promote=not promote).SerializeToString()


def put_stored(raw: bytes) -> int:
    return int(pb.PutResponse.FromString(raw).stored)
