"""What the vLLM scripts share: an engine on CPU with memstore as its KV connector, and greedy runs."""

from __future__ import annotations

import os
from typing import Any

# vLLM forks its engine process by default. A script that has already used gRPC (e2e.py waits for its
# server on a channel) has gRPC's threads running, and a fork can copy one of their locks held: the
# engine then hangs at start, now and then, until vLLM gives up on it (VLLM_ENGINE_READY_TIMEOUT_S).
# A spawned engine starts clean.
os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")

PARAMS: dict[str, Any] = {"max_tokens": 8, "temperature": 0.0, "logprobs": 1}


def engine(model_dir: str, target: str, log: str, role: str = "kv_both") -> Any:
    """vLLM on the tiny model with vLLM's own prefix caching off, so every reuse comes from memstore."""
    from vllm import LLM
    from vllm.config import KVTransferConfig

    return LLM(
        model=model_dir,
        enforce_eager=True,
        enable_prefix_caching=False,
        dtype="float32",
        max_model_len=2048,
        gpu_memory_utilization=0.25,  # on CPU: the share of memory reserved for the KV cache
        kv_transfer_config=KVTransferConfig(
            kv_connector="MemstoreConnector",
            kv_connector_module_path="memstore.adapters.vllm",
            kv_role=role,
            kv_connector_extra_config={"memstore_target": target, "log_path": log},
        ),
    )


def run(
    llm: Any, prompt: str | list[int], kv_transfer_params: dict[str, Any] | None = None
) -> tuple[list[int], list[float]]:
    """The greedy tokens of one prompt (text or token ids) and each token's logprob; the request
    carries ``kv_transfer_params`` when given (the connector's retention hints)."""
    from vllm import SamplingParams

    asked = {"prompt_token_ids": prompt} if isinstance(prompt, list) else prompt
    extra = {"extra_args": {"kv_transfer_params": kv_transfer_params}} if kv_transfer_params else {}
    out = llm.generate([asked], SamplingParams(**PARAMS, **extra), use_tqdm=False)[0].outputs[0]
    logprobs = [float(step[tok].logprob) for tok, step in zip(out.token_ids, out.logprobs, strict=True)]
    return list(out.token_ids), logprobs


def events(log: str) -> list[dict[str, Any]]:
    """The connector's log (``log_path``): one JSON object per lookup, load and store."""
    import json

    with open(log) as f:
        return [json.loads(line) for line in f]
