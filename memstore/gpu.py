"""Restoring batches of values straight into torch tensors, on the CPU or a CUDA device.

With the local path and CUDA, the server's arena is registered as pinned host memory
(``cudaHostRegister`` through ``torch.cuda.cudart()``), so host-to-device copies read the store's own
memory at full speed: each value is copied once, from the arena into the caller's GPU tensor. Bytes
are accepted only if, after the copies finished, the slot generations are unchanged and the arena
bytes match their checksums; anything else is fetched again through a host buffer.

torch is imported lazily: the rest of memstore works without it, and so does this module's CPU path.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from memstore.client import Client
from memstore.local import LocalArena
from memstore.v1 import memstore_pb2 as pb

if TYPE_CHECKING:
    import torch

_pool: ThreadPoolExecutor | None = None


def _verifier() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(
            max_workers=min(16, os.cpu_count() or 1), thread_name_prefix="memstore-verify"
        )
    return _pool


def register_pinned(arena: LocalArena) -> bool:
    """Register the arena mapping with CUDA as pinned host memory; False where that is not possible."""
    import ctypes

    import torch

    if not torch.cuda.is_available():
        return False
    if arena.pinned:
        return True
    addr = ctypes.addressof(ctypes.c_char.from_buffer(arena.mm))
    cudart = torch.cuda.cudart()
    if int(cudart.cudaHostRegister(addr, len(arena.mm), 0)) != 0:
        return False
    arena.pinned = True
    arena.on_close.append(lambda: cudart.cudaHostUnregister(addr))
    return True


def _copy_streams(n: int) -> list[Any]:
    """The current stream, plus side streams that first wait for it (so they see its writes)."""
    import torch

    current = torch.cuda.current_stream()
    if n == 1:
        return [current]
    key = (current.device, n)
    if key not in _side_streams:
        _side_streams[key] = [torch.cuda.Stream(device=current.device) for _ in range(n - 1)]
    for side in _side_streams[key]:
        side.wait_stream(current)
    return [current, *_side_streams[key]]


_side_streams: dict[tuple[Any, int], list[Any]] = {}


def _arena_locations(client: Client, keys: list[bytes], ns: str) -> Any:
    """Where each key's record lies in the arena (one local-path call for the batch)."""
    req = pb.GetRequest(namespace=ns, keys=keys).SerializeToString()
    return pb.LocalGetResponse.FromString(
        client._call(lambda t: client._local_get(req, timeout=t), None)
    ).locations


def _byte_view(t: torch.Tensor) -> torch.Tensor:
    import torch

    if not t.is_contiguous():
        raise ValueError("destination tensors must be contiguous")
    return t.view(-1).view(torch.uint8)


def load_into_tensors(
    client: Client,
    keys: list[bytes],
    tensors: list[torch.Tensor],
    *,
    ns: str = "default",
    pinned: bool = True,
    verify: bool = True,
    streams: int = 1,
) -> list[int | None]:
    """Copy each key's value into the matching tensor (its bytes, whatever the tensor's dtype).

    Returns the bytes written per key, or None for a miss. CPU tensors are filled through
    ``Client.get_into``; CUDA tensors straight from the arena when the client is local. With
    ``verify=False`` a CUDA copy is accepted on the slot generation check alone (no slot was freed or
    reused during the copy) and the host does not re-read the bytes for their checksum: faster, and it
    trusts the arena's memory not to have been corrupted in place. ``streams`` spreads the copies
    over that many CUDA streams (the copy engines can then work side by side).
    """
    if len(keys) != len(tensors):
        raise ValueError("one tensor per key")
    if not any(t.is_cuda for t in tensors):
        return client.get_into(keys, tensors, ns=ns)
    import torch

    arena = client._local_arena()
    if arena is None:
        return _through_host(client, keys, tensors, ns)
    if pinned:
        register_pinned(arena)
    locs = _arena_locations(client, keys, ns)
    src = torch.frombuffer(arena.mm, dtype=torch.uint8)
    lanes = _copy_streams(max(1, streams))
    sizes: list[int | None] = [None] * len(keys)
    copied: list[tuple[int, Any]] = []
    redo: list[int] = []
    for i, loc in enumerate(locs):
        if loc.status == pb.LOCAL_MISS:
            continue
        if loc.status != pb.LOCAL_FOUND or arena.generation(loc.slot) != loc.generation:
            redo.append(i)
            continue
        start = loc.offset + loc.header_len
        n = loc.length - loc.header_len
        dst = _byte_view(tensors[i])
        if dst.numel() < n:
            raise ValueError(f"tensor {i} holds {dst.numel()} bytes, the value has {n}")
        with torch.cuda.stream(lanes[len(copied) % len(lanes)]):
            dst[:n].copy_(src[start : start + n], non_blocking=True)
        copied.append((i, loc))
    # Checksums run on host threads while the copies are in flight (xxhash releases the GIL); the
    # generation check after the copies finished is what ties both to the same, unchanged bytes.
    if verify:
        checks = list(
            _verifier().map(
                lambda il: arena.check(il[1].slot, il[1].offset, il[1].length, il[1].generation), copied
            )
        )
    else:
        checks = [arena.header_meta(loc.slot, loc.offset, loc.length, loc.generation) for _, loc in copied]
    for lane in lanes:
        lane.synchronize()
    for (i, loc), meta in zip(copied, checks, strict=True):
        if meta is None or arena.generation(loc.slot) != loc.generation:
            redo.append(i)
        else:
            sizes[i] = meta.raw_len
    if redo:
        again = _through_host(client, [keys[i] for i in redo], [tensors[i] for i in redo], ns)
        for i, got in zip(redo, again, strict=True):
            sizes[i] = got
    return sizes


class LayerwiseLoad:
    """Blocks on their way to the GPU in layer order, so a model can start on its first layers while
    the later ones are still being copied (LMCache calls this layerwise retrieval).

    Each block holds all layers of its tokens, layer after layer (``memstore.kv``). The copies run on
    a side stream in chunks of whole layers, a few MiB each, every block's chunk before the next
    chunk; an event after each chunk is what ``layer(i)`` makes the caller's stream wait for.
    ``finish()`` waits for the copies, then says whether the bytes are the ones stored: slot
    generations unchanged and, with ``verify``, the checksums computed on host threads meanwhile.
    """

    def __init__(self, staging: Any, layers: int, layers_per_chunk: int, events: list[Any], check: Any):
        self.staging = staging  # [blocks, block bytes] uint8 on the GPU
        self.blocks = int(staging.shape[0])
        self.layers = layers
        self.layer_bytes = int(staging.shape[1]) // layers
        self._per_chunk = layers_per_chunk
        self._events = events
        self._check = check

    def layer(self, i: int) -> Any:
        """Layer ``i`` of every block, ``[blocks, layer bytes]`` uint8, once the current stream reaches it."""
        import torch

        torch.cuda.current_stream().wait_event(self._events[i // self._per_chunk])
        return self.staging[:, i * self.layer_bytes : (i + 1) * self.layer_bytes]

    def finish(self) -> bool:
        self._events[-1].synchronize()
        return bool(self._check())


def start_layerwise_load(
    client: Client,
    keys: list[bytes],
    *,
    layers: int,
    ns: str = "default",
    verify: bool = True,
    chunk_bytes: int = 4 << 20,
) -> LayerwiseLoad | None:
    """Start copying the leading present ``keys`` (equal-sized blocks of ``layers`` layers) to the GPU.

    None where this path does not apply: no CUDA, no local arena, the first key not in the hot tier,
    or blocks that are not whole layers of one size. Then use ``load_into_tensors``.
    """
    import torch

    if not keys or not torch.cuda.is_available():
        return None
    arena = client._local_arena()
    if arena is None:
        return None
    register_pinned(arena)
    locs = _arena_locations(client, keys, ns)
    found = []
    for loc in locs:  # the leading run of blocks the arena holds now
        if loc.status != pb.LOCAL_FOUND or arena.generation(loc.slot) != loc.generation:
            break
        found.append(loc)
    size = found[0].length - found[0].header_len if found else 0
    if not found or size % layers or any(loc.length - loc.header_len != size for loc in found):
        return None
    layer_bytes = size // layers
    per_chunk = max(1, min(layers, chunk_bytes // max(layer_bytes, 1)))
    src = torch.frombuffer(arena.mm, dtype=torch.uint8)
    staging = torch.empty((len(found), size), dtype=torch.uint8, device="cuda")
    side = _copy_streams(2)[1]
    staging.record_stream(side)  # not reused before the copies are done, even if dropped earlier
    events = []
    with torch.cuda.stream(side):
        for lo in range(0, layers, per_chunk):
            a, b = lo * layer_bytes, min(layers, lo + per_chunk) * layer_bytes
            for row, loc in enumerate(found):
                start = loc.offset + loc.header_len
                staging[row, a:b].copy_(src[start + a : start + b], non_blocking=True)
            events.append(torch.cuda.Event())
            events[-1].record(side)
    checks = (
        [_verifier().submit(arena.check, loc.slot, loc.offset, loc.length, loc.generation) for loc in found]
        if verify
        else []
    )

    def check() -> bool:
        hashed = all(f.result() is not None for f in checks)
        return hashed and all(arena.generation(loc.slot) == loc.generation for loc in found)

    return LayerwiseLoad(staging, layers, per_chunk, events, check)


def _through_host(
    client: Client, keys: list[bytes], tensors: list[torch.Tensor], ns: str
) -> list[int | None]:
    """Fetch into pinned host buffers, then copy to the devices."""
    import torch

    staging = [torch.empty(_byte_view(t).numel(), dtype=torch.uint8, pin_memory=True) for t in tensors]
    sizes = client.get_into(keys, [s.numpy() for s in staging], ns=ns)
    for t, s, n in zip(tensors, staging, sizes, strict=True):
        if n is not None:
            _byte_view(t)[:n].copy_(s[:n], non_blocking=True)
    torch.cuda.synchronize()
    return sizes
