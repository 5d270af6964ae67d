"""Adapters that connect inference engines to memstore's KV-cache layer (``memstore.kv``)."""
