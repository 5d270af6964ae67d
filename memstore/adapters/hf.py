"""HF transformers adapter: save a model's KV cache to memstore and load the longest cached prefix.

Works with transformers 4.57 to 5.24: caches expose ``cache.layers[i].keys/.values`` (older ones
``key_cache``/``value_cache`` lists), and the forward argument is ``cache=`` from 5.24 on and
``past_key_values=`` before; ``cache_kwargs(model, cache)`` picks the right one.

Blocks hold every layer of ``block_tokens`` tokens (see ``memstore.kv``). bf16 travels as its uint16
bits, so a lossless codec gives back the exact tensors and the model's logits are bitwise equal.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from memstore.kv import KVCache, KVIdentity

_DTYPE_NAMES = {"torch.bfloat16": "bfloat16", "torch.float16": "float16", "torch.float32": "float32"}


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword that passes a cache to ``model(...)`` in this transformers version."""
    params = inspect.signature(model.forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


def _layer_kv(cache: Any, layer: int) -> tuple[Any, Any]:
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    if hasattr(cache, "key_cache"):
        return cache.key_cache[layer], cache.value_cache[layer]
    return cache[layer][0], cache[layer][1]  # legacy tuple of (k, v) pairs


def _sequence_kv(kv: Any, n: int) -> tuple[Any, Any]:
    """Blocks' K and V of one layer, ``[blocks, 2, heads, T, D]``, as ``[1, heads, n, D]`` each."""
    heads, dim = kv.shape[2], kv.shape[-1]
    k = kv[:, 0].permute(1, 0, 2, 3).reshape(1, heads, -1, dim)[:, :, :n]
    v = kv[:, 1].permute(1, 0, 2, 3).reshape(1, heads, -1, dim)[:, :, :n]
    return k, v


def _tokens(token_ids: Any) -> list[int]:
    if hasattr(token_ids, "tolist"):
        token_ids = token_ids.tolist()
    if token_ids and isinstance(token_ids[0], list):
        if len(token_ids) != 1:
            raise ValueError("one sequence at a time (batch size 1)")
        token_ids = token_ids[0]
    return [int(t) for t in token_ids]


@functools.cache
def _arriving_cache_class() -> Any:
    """A ``DynamicCache`` whose layers are filled as the model reaches them (see ``load(layerwise=)``)."""
    from transformers import DynamicCache

    class ArrivingCache(DynamicCache):
        memstore_fills: dict[int, Any]

        def update(
            self, key_states: Any, value_states: Any, layer_idx: int, *args: Any, **kwargs: Any
        ) -> Any:
            fill = getattr(self, "memstore_fills", {}).pop(layer_idx, None)
            if fill is not None:
                fill(layer_idx)
            return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    return ArrivingCache


class HFKVCache:
    """A transformers model's KV cache, kept in memstore by token prefix."""

    def __init__(
        self,
        client: Any,
        model_config: Any,
        *,
        model_id: str,
        revision: str = "",
        weights_digest: str = "",
        dtype: Any = None,
        block_tokens: int = 16,
        adapter_id: str = "",
        cache_salt: str = "",
        warm_codec: str = "",
        cold_codec: str = "",
    ) -> None:
        import torch

        cfg = model_config
        heads = cfg.num_attention_heads
        self.config = cfg
        self.dtype = (
            dtype or getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None) or torch.float32
        )
        if isinstance(self.dtype, str):
            self.dtype = getattr(torch, self.dtype)
        kv_dtype = _DTYPE_NAMES.get(str(self.dtype))
        if kv_dtype is None:
            raise ValueError(f"unsupported KV dtype {self.dtype}; use bfloat16, float16 or float32")
        self.identity = KVIdentity(
            model_id=model_id,
            revision=revision,
            weights_digest=weights_digest,
            num_layers=cfg.num_hidden_layers,
            num_kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
            kv_dtype=kv_dtype,
            block_tokens=block_tokens,
            adapter_id=adapter_id,
            cache_salt=cache_salt,
        )
        self.kv = KVCache(client, self.identity, warm_codec=warm_codec, cold_codec=cold_codec)

    # ---- tensors <-> stored blocks ---------------------------------------------------------------

    def _to_storage(self, t: Any) -> np.ndarray:
        import torch

        t = t.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
            return np.asarray(t.numpy()).view(np.uint16)
        return np.asarray(t.numpy())

    def _from_storage(self, a: np.ndarray) -> Any:
        import torch

        if self.identity.kv_dtype == "bfloat16":
            return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(a)

    def save(self, token_ids: Sequence[int] | Any, cache: Any) -> int:
        """Store the full blocks of ``token_ids`` that ``cache`` holds and memstore lacks; returns a count."""
        import torch

        tokens = _tokens(token_ids)
        T = self.identity.block_tokens
        k0, _ = _layer_kv(cache, 0)
        full = min(len(tokens), int(k0.shape[-2])) // T
        have = self.kv.lookup(tokens[: full * T]).blocks
        if have >= full:
            return 0
        layers = [_layer_kv(cache, i) for i in range(self.identity.num_layers)]
        blocks = []
        for b in range(have, full):
            span = slice(b * T, (b + 1) * T)
            block = torch.stack([torch.stack([k[0, :, span, :], v[0, :, span, :]]) for k, v in layers])
            blocks.append(self._to_storage(block))
        return self.kv.put_blocks(tokens[: full * T], blocks, start=have)

    def load(
        self,
        token_ids: Sequence[int] | Any,
        *,
        max_tokens: int | None = None,
        device: Any = None,
        verify: bool = True,
        layerwise: bool = False,
    ) -> tuple[Any | None, int]:
        """A new ``DynamicCache`` holding the longest cached prefix of ``token_ids``, and its length.

        By default at most ``len(token_ids) - 1`` tokens are loaded, so the model still has the last
        token to run: feed it ``token_ids[n:]`` with the returned cache. A prompt cached to its end is
        loaded whole and its last token cut off, so the model runs one token rather than a block.
        With a CUDA ``device`` and a local client the blocks go from the server's shared memory
        straight into GPU memory (``memstore.gpu.load_into_tensors``; ``verify`` as there).

        ``layerwise=True`` (CUDA, local client) returns at once with the blocks still being copied, in
        layer order; the model's first layers run while later ones arrive. When the model reaches its
        last layer the load is checked, and ``memstore.errors.StaleLoadError`` is raised there if the
        blocks changed meanwhile (load again), so no output is ever computed from changed bytes.
        """
        tokens = _tokens(token_ids)
        limit = len(tokens) - 1 if max_tokens is None else min(max_tokens, len(tokens))
        if limit <= 0:
            return None, 0
        from transformers import DynamicCache

        T = self.identity.block_tokens
        hit = self.kv.lookup(tokens[: -(-limit // T) * T])
        if hit.blocks == 0:
            return None, 0
        if layerwise:
            arriving = self._load_layerwise(tokens, hit.blocks, limit, verify)
            if arriving is not None:
                return arriving
        stacked = self._fetch(tokens, hit.blocks, device, verify)  # [n, layers, 2, heads, T, D]
        if stacked is None:
            return None, 0
        n = min(int(stacked.shape[0]) * T, limit)
        try:
            cache = DynamicCache(config=self.config)
        except TypeError:
            cache = DynamicCache()
        for layer in range(self.identity.num_layers):
            kv = stacked[:, layer]  # [n, 2, heads, T, D]
            k, v = (t.contiguous() for t in _sequence_kv(kv, n))
            cache.update(k, v, layer)
        return cache, n

    def _fetch(self, tokens: list[int], blocks: int, device: Any, verify: bool) -> Any:
        """The first ``blocks`` blocks as one tensor on ``device``, cut at the first one missing."""
        import torch

        device = torch.device(device) if device is not None else torch.device("cpu")
        client = self.kv.client
        if device.type == "cuda" and getattr(client, "_local_arena", lambda: None)() is not None:
            from memstore.gpu import load_into_tensors

            raw = torch.empty((blocks, *self.identity.block_shape), dtype=self._raw_dtype(), device=device)
            sizes = load_into_tensors(
                client, self.kv.keys(tokens)[:blocks], list(raw), ns=self.kv.ns, verify=verify
            )
            n = next((i for i, got in enumerate(sizes) if got is None), blocks)  # evicted meanwhile
            return raw[:n].view(self.dtype) if n else None
        got = self.kv.get_blocks(tokens, blocks)
        n = next((i for i, b in enumerate(got) if b is None), len(got))
        if n == 0:
            return None
        present = [b for b in got[:n] if b is not None]
        return self._from_storage(np.stack(present)).to(device)

    def _load_layerwise(
        self, tokens: list[int], blocks: int, limit: int, verify: bool
    ) -> tuple[Any, int] | None:
        from memstore.errors import StaleLoadError
        from memstore.gpu import start_layerwise_load

        ident = self.identity
        loader = start_layerwise_load(
            self.kv.client,
            self.kv.keys(tokens)[:blocks],
            layers=ident.num_layers,
            ns=self.kv.ns,
            verify=verify,
        )
        if loader is None:
            return None
        import torch
        from transformers import DynamicCache

        n = min(loader.blocks * ident.block_tokens, limit)
        heads, dim = ident.num_kv_heads, ident.head_dim
        cache = _arriving_cache_class()(config=self.config)
        for layer in range(ident.num_layers):  # shapes now, bytes when the model gets to the layer
            room = torch.empty((1, heads, n, dim), dtype=self.dtype, device=loader.staging.device)
            DynamicCache.update(cache, room, torch.empty_like(room), layer)

        def fill(layer: int) -> None:
            kv = (
                loader.layer(layer).view(self.dtype).reshape(loader.blocks, 2, heads, ident.block_tokens, dim)
            )
            k, v = _layer_kv(cache, layer)
            new_k, new_v = _sequence_kv(kv, n)
            k.copy_(new_k)
            v.copy_(new_v)
            if layer == ident.num_layers - 1 and not loader.finish():
                raise StaleLoadError("KV blocks changed in memstore while they were copied; load them again")

        cache.memstore_fills = {layer: fill for layer in range(ident.num_layers)}
        return cache, n

    def _raw_dtype(self) -> Any:
        import torch

        return torch.int16 if self.identity.kv_dtype == "bfloat16" else self.dtype
