"""Time to first token: prefill against loading the cached prefix through memstore, one run each.

Random-weight Llama-shaped models (HF transformers). For each prompt length the model prefills the
whole prompt (the peer), the KV cache goes through a ``memstore serve`` process, and then a request
with the same prompt loads the cached blocks (the local shared-memory path; on CUDA straight into GPU
tensors) and runs only the tokens after them (all of a prompt cached: its last token only).
``speedup = prefill time / (load + suffix) time``.
On the CPU a small model at 512 and 2048 tokens; with CUDA the Llama-3.2-1B and Llama-3.1-8B shapes
in bf16 at 2k and 8k tokens (and 1B at 32k).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from tqdm import tqdm

from bench.common import print_table, write_result
from bench.peers import MemstoreServer
from memstore.tuning import pool_large_allocations

SHAPES = {  # name: (hidden, layers, heads, kv_heads, head_dim, intermediate, vocab)
    "small": (512, 4, 8, 4, 64, 1024, 2048),
    "llama1b": (2048, 16, 32, 8, 64, 8192, 128256),
    "llama8b": (4096, 32, 32, 8, 128, 14336, 128256),
}


def _model(name: str, device: str, dtype: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, kv, head_dim, inter, vocab = SHAPES[name]
    cfg = LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=vocab,
        max_position_embeddings=40000,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    return model, cfg


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Any, device: str, repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _case(
    client: Any,
    name: str,
    tokens: int,
    device: str,
    repeat: int,
    verify: bool = True,
    layerwise: bool = True,
) -> dict[str, Any]:
    import numpy as np
    import torch

    from memstore.adapters.hf import HFKVCache, cache_kwargs

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, cfg = _model(name, device, dtype)
    ids = torch.randint(0, cfg.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(1)).to(device)
    block = 256 if device == "cuda" else 64
    kv = HFKVCache(client, cfg, model_id=f"bench-{name}", dtype=dtype, block_tokens=block)

    def prefill() -> Any:
        with torch.no_grad():
            return model(ids, use_cache=True)

    prefill()  # warm up kernels and allocator
    t_prefill, out = _timed(prefill, device, repeat)
    cache = getattr(out, "cache", None) or out.past_key_values
    kv.save(ids[0].tolist(), cache)
    del out, cache
    token_list = ids[0].tolist()

    def load_and_finish() -> Any:  # on CUDA the blocks go from the arena straight into GPU memory
        loaded, n = kv.load(token_list, device=device, verify=verify, layerwise=layerwise)
        with torch.no_grad():
            return model(ids[:, n:], use_cache=True, **cache_kwargs(model, loaded)), n

    load_and_finish()
    t_hit, (_, n) = _timed(load_and_finish, device, repeat)
    kv_bytes = n * kv.identity.block_bytes // block
    return {
        "model": name,
        "tokens": tokens,
        "device": device,
        "load": ("layerwise" if layerwise and device == "cuda" else "whole")
        + ("" if verify else ", no checksum"),
        "prefill_ms": t_prefill * 1e3,
        "load_plus_suffix_ms": t_hit * 1e3,
        "loaded_tokens": n,
        "kv_MiB": kv_bytes / 2**20,
        "speedup": t_prefill / t_hit,
        "kv_GBps": kv_bytes / t_hit / 1e9,
        "np": np.__version__,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    pool_large_allocations()
    from memstore import Client

    cuda = torch.cuda.is_available()
    if cuda:
        cases = [
            ("llama1b", 2048),
            ("llama1b", 8192),
            ("llama1b", 32768),
            ("llama8b", 2048),
            ("llama8b", 8192),
        ]
    else:
        cases = [("small", 512), ("small", 2048)]
    if args.quick:
        cases = cases[:2]
    repeat = 3 if args.quick else 5
    rows = []
    hot = "6GiB" if cuda else "512MiB"
    with MemstoreServer(unix=True, hot=hot, warm="256MiB", cold="16GiB") as mem, Client(mem.target) as client:
        for name, tokens in tqdm(cases, desc="ttft", unit="case"):
            rows.append(_case(client, name, tokens, "cuda" if cuda else "cpu", repeat))
        if cuda:  # trusting the slot generations alone (no host checksum pass); all layers before the model
            rows.append(_case(client, "llama8b", 8192, "cuda", repeat, verify=False))
            rows.append(_case(client, "llama8b", 8192, "cuda", repeat, layerwise=False))
    for r in rows:
        r.pop("np")
    print_table(
        rows,
        [
            "model",
            "tokens",
            "device",
            "load",
            "prefill_ms",
            "load_plus_suffix_ms",
            "loaded_tokens",
            "kv_MiB",
            "kv_GBps",
            "speedup",
        ],
    )
    summary: dict[str, Any] = {
        f"ttft_speedup_{r['model']}_{r['tokens']}"
        + ("_no_checksum" if "no checksum" in r["load"] else "")
        + ("_whole" if r["load"].startswith("whole") and r["device"] == "cuda" else ""): r["speedup"]
        for r in rows
    }
    summary["device"] = torch.cuda.get_device_name() if cuda else "cpu"
    if cuda:
        summary["targets"] = {"llama8b_8192 >= 5x": summary.get("ttft_speedup_llama8b_8192", 0) >= 5}
    path = write_result(
        "ttft" + ("-cuda" if cuda else ""),
        rows,
        summary,
        args=args,
        config={"quick": args.quick, "repeat": repeat},
    )
    print(f"wrote {path}")
    return summary
