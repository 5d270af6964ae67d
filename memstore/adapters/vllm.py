"""A vLLM KV connector (``KVConnectorBase_V1``) that keeps KV blocks in memstore.

Load it with::

    KVTransferConfig(kv_connector="MemstoreConnector", kv_connector_module_path="memstore.adapters.vllm",
                     kv_role="kv_both", kv_connector_extra_config={"memstore_target": "unix:/path.sock"})

Scheduler side: one ``Lookup`` call per request finds how many leading blocks of its prompt memstore
holds. Worker side: the blocks are fetched in one call (through the shared-memory path when the
server is on this host) and written into vLLM's paged KV tensors before the forward pass; blocks the
pass computed are gathered layer by layer and stored in one call when the pass is done. The two roles
share nothing but memstore and vLLM's own connector metadata (token and block ids).

Roles (``kv_role``): ``kv_both`` loads what memstore holds and stores what it computed;
``kv_producer`` (a prefill instance) only stores, and ``kv_consumer`` (a decode instance) only loads.
For disaggregated serving, the producer's and the consumer's memstore servers share a pool
(``memstore serve --pool``): a block the producer stored on its host is found by the consumer's
lookup on another once it is published (see README, Pool).

Blocks use memstore's KV layout, one block = vLLM's block size in tokens, all layers:
(layers, 2, kv_heads, block_tokens, head_dim). vLLM's CPU paged tensor per layer is
[num_blocks, kv_heads, block_size, 2 * head_dim], holding, per block and head, the block's K rows then
its V rows; ``_to_paged``/``_from_paged`` convert.

Extra config: ``memstore_target`` (required), ``cache_salt``, ``model_id`` (default: the model path),
``revision``, ``log_path`` (JSON lines of lookups and stores, for tests and debugging).

A process that has used gRPC itself (a memstore ``Client``, say) before it starts vLLM should have vLLM
spawn its engine (``VLLM_WORKER_MULTIPROC_METHOD=spawn``): vLLM forks by default, and a fork of a
process with gRPC's threads running can hang in the child.

Retention hints come from a request's ``kv_transfer_params`` (``SamplingParams(extra_args=
{"kv_transfer_params": {...}})``, or the field of that name in vLLM's OpenAI-compatible API):
``memstore_ttl`` (seconds to keep its blocks), ``memstore_priority`` and ``memstore_session``; they go
with the request's lookup and with the store of its blocks. ``memstore_end_session: true`` ends that
session when the request finishes (its blocks no open session shares go first);
``memstore_pause_session: true`` pauses it instead (an agent's tool call is in flight: its blocks wait
behind unhinted ones until the session's next request), with ``memstore_resume_in``, where the caller
has one, its estimate of the seconds until that request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from memstore.client import Client
from memstore.kv import KVCache, KVIdentity
from memstore.retention import Hint

if TYPE_CHECKING:
    from vllm.config import VllmConfig

_LAYER = re.compile(r"layers\.(\d+)\.")
_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


@dataclass
class _Transfer:
    request_id: str
    token_ids: list[int]
    block_ids: list[int]
    first: int  # first block index (of the prompt's blocks) to move
    count: int  # how many blocks
    hint: Hint | None = None  # the request's retention hint, for its stores


@dataclass
class MemstoreConnectorMetadata(KVConnectorMetadata):  # type: ignore[misc]
    loads: list[_Transfer] = field(default_factory=list)
    stores: list[_Transfer] = field(default_factory=list)


def _identity(vllm_config: VllmConfig, extra: dict[str, Any]) -> KVIdentity:
    model = vllm_config.model_config
    parallel = vllm_config.parallel_config
    cache_dtype = vllm_config.cache_config.cache_dtype
    dtype = model.dtype if cache_dtype in (None, "auto") else cache_dtype
    kv_dtype = _DTYPES.get(dtype, str(dtype))
    return KVIdentity(
        model_id=str(extra.get("model_id", model.model)),
        revision=str(extra.get("revision", model.revision or "")),
        num_layers=model.get_num_layers(parallel),
        num_kv_heads=model.get_num_kv_heads(parallel),
        head_dim=model.get_head_size(),
        kv_dtype=kv_dtype,
        block_tokens=vllm_config.cache_config.block_size,
        tp_rank=getattr(parallel, "rank", 0) % max(parallel.tensor_parallel_size, 1),
        tp_size=parallel.tensor_parallel_size,
        pp_size=parallel.pipeline_parallel_size,
        cache_salt=str(extra.get("cache_salt", "")),
    )


def hint_of(params: dict[str, Any] | None) -> Hint | None:
    """The retention hint a request's ``kv_transfer_params`` carry, or None."""
    p = params or {}
    if not any(k in p for k in ("memstore_ttl", "memstore_priority", "memstore_session")):
        return None
    return Hint(
        ttl=float(p.get("memstore_ttl") or 0.0),
        priority=int(p.get("memstore_priority") or 0),
        session=str(p.get("memstore_session") or ""),
    )


def _to_paged(block_layer: np.ndarray, heads: int, tokens: int, head_dim: int) -> torch.Tensor:
    """memstore [2, H, T, D] -> vLLM CPU [H, T, 2D] (per head: K rows, then V rows)."""
    return torch.from_numpy(np.ascontiguousarray(block_layer.transpose(1, 0, 2, 3))).reshape(
        heads, tokens, 2 * head_dim
    )


def _from_paged(paged_block: torch.Tensor, heads: int, tokens: int, head_dim: int) -> torch.Tensor:
    """vLLM CPU [H, T, 2D] -> memstore [2, H, T, D]."""
    return paged_block.reshape(heads, 2, tokens, head_dim).permute(1, 0, 2, 3)


class MemstoreConnector(KVConnectorBase_V1):  # type: ignore[misc]
    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: Any = None) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        extra = dict(self._kv_transfer_config.kv_connector_extra_config or {})
        if "memstore_target" not in extra:
            raise ValueError("kv_connector_extra_config needs 'memstore_target' (HOST:PORT or unix:PATH)")
        self.identity = _identity(vllm_config, extra)
        self.block = self.identity.block_tokens
        self.client = Client(str(extra["memstore_target"]))
        self.kv = KVCache(self.client, self.identity)
        self.log_path = extra.get("log_path")
        config = self._kv_transfer_config
        self.loads, self.stores = bool(config.is_kv_consumer), bool(config.is_kv_producer)
        # scheduler state
        self._hits: dict[str, int] = {}
        self._need_load: dict[str, int] = {}
        self._hints: dict[str, Hint] = {}
        # worker state: per request, the blocks being gathered layer by layer
        self._gathering: dict[str, tuple[_Transfer, np.ndarray]] = {}

    def _log(self, **record: Any) -> None:
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(json.dumps({"namespace": self.kv.ns, **record}) + "\n")

    # ---- scheduler side -------------------------------------------------------------------------

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> tuple[int | None, bool]:
        hint = hint_of(getattr(request, "kv_transfer_params", None))
        if hint is not None:
            self._hints[request.request_id] = hint
        if not self.loads:  # a producer computes every prompt itself
            return 0, False
        tokens = list(request.prompt_token_ids or [])
        usable = (len(tokens) - 1) // self.block * self.block  # at least one token must run
        hit = self.kv.lookup(tokens[:usable], hint=hint) if usable else None
        blocks = hit.blocks if hit else 0
        self._hits[request.request_id] = blocks
        self._log(event="lookup", request=request.request_id, prompt_tokens=len(tokens), hit_blocks=blocks)
        matched = blocks * self.block
        return max(0, matched - num_computed_tokens), False

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        if num_external_tokens > 0:
            self._need_load[request.request_id] = self._hits.get(request.request_id, 0)

    def build_connector_meta(self, scheduler_output: Any) -> KVConnectorMetadata:
        meta = MemstoreConnectorMetadata()
        for req in scheduler_output.scheduled_new_reqs:
            tokens = list(req.prompt_token_ids or [])
            block_ids = list(req.block_ids[0])
            loaded = self._need_load.pop(req.req_id, 0)
            if loaded:
                meta.loads.append(_Transfer(req.req_id, tokens, block_ids, 0, loaded))
            scheduled = scheduler_output.num_scheduled_tokens.get(req.req_id, 0)
            done = min(len(tokens), req.num_computed_tokens + scheduled) // self.block
            first = max(loaded, self._hits.pop(req.req_id, 0))
            hint = self._hints.get(req.req_id)
            if self.stores and done > first:
                meta.stores.append(_Transfer(req.req_id, tokens, block_ids, first, done - first, hint))
        return meta

    def request_finished(self, request: Any, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        params = getattr(request, "kv_transfer_params", None) or {}
        hint = self._hints.pop(request.request_id, None)
        if hint is not None and hint.session:
            if params.get("memstore_end_session"):
                released = self.kv.end_session(hint.session)
                self._log(event="end_session", request=request.request_id, released=released)
            elif params.get("memstore_pause_session"):
                resume_in = params.get("memstore_resume_in")
                released = self.kv.end_session(
                    hint.session, pause=True, resume_in=None if resume_in is None else float(resume_in)
                )
                self._log(
                    event="pause_session", request=request.request_id, released=released, resume_in=resume_in
                )
        return False, None

    # ---- worker side ----------------------------------------------------------------------------

    def _layers(self, forward_context: Any) -> list[tuple[int, torch.Tensor]]:
        out = []
        for name, layer in forward_context.no_compile_layers.items():
            cache = getattr(layer, "kv_cache", None)
            m = _LAYER.search(name)
            if cache is None or m is None:
                continue
            if isinstance(cache, list | tuple):
                cache = cache[0]
            out.append((int(m.group(1)), cache))
        return out

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        if not isinstance(meta, MemstoreConnectorMetadata) or not meta.loads:
            return
        ident = self.identity
        layers = self._layers(forward_context)
        for t in meta.loads:
            fetched = self.kv.get_blocks(t.token_ids, t.first + t.count)[t.first :]
            blocks = [b for b in fetched if b is not None]
            if len(blocks) != t.count:
                raise RuntimeError(f"memstore lost blocks of request {t.request_id} between lookup and load")
            for j, block in enumerate(blocks):
                dst_block = t.block_ids[t.first + j]
                for index, cache in layers:
                    cache[dst_block].copy_(
                        _to_paged(block[index], ident.num_kv_heads, self.block, ident.head_dim)
                    )
            self._log(event="load", request=t.request_id, blocks=len(blocks))

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # loads complete in start_load_kv

    def save_kv_layer(
        self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any
    ) -> None:
        meta = self._get_connector_metadata()
        if not isinstance(meta, MemstoreConnectorMetadata) or not meta.stores:
            return
        m = _LAYER.search(layer_name)
        if m is None:
            return
        index = int(m.group(1))
        ident = self.identity
        for t in meta.stores:
            entry = self._gathering.get(t.request_id)
            if entry is None:
                buf = np.empty((t.count, *ident.block_shape), dtype=ident.storage_dtype)
                entry = self._gathering[t.request_id] = (t, buf)
            buf = entry[1]
            for j in range(t.count):
                src = _from_paged(
                    kv_layer[t.block_ids[t.first + j]], ident.num_kv_heads, self.block, ident.head_dim
                )
                if ident.kv_dtype == "bfloat16":
                    src = src.view(torch.int16)
                buf[j, index] = src.cpu().numpy()

    def wait_for_save(self) -> None:
        for t, buf in self._gathering.values():
            self.kv.put_blocks(t.token_ids, list(buf), start=t.first, hint=t.hint)
            self._log(
                event="store", request=t.request_id, first=t.first, blocks=t.count, hinted=t.hint is not None
            )
        self._gathering.clear()
