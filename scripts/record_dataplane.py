"""Record one data-plane exchange for docs/dataplane-exchange.json: ``python scripts/record_dataplane.py``.

A server runs in this process; a relay between the client and its TCP data plane keeps every byte each
side sent. The client stores two values (bytes, and a float32 array) and reads them back with a key
that is not stored. tests/test_dataplane_spec.py decodes the file with nothing but the specification.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "server")]

from memstore import Client, TieredStore  # noqa: E402
from memstore import client_core as core  # noqa: E402
from memstore.dataplane_client import Connection  # noqa: E402
from memstore_server import create_server  # noqa: E402


def relay(upstream: tuple[str, int]) -> tuple[int, dict[str, bytearray], threading.Event]:
    """A one-connection TCP relay to ``upstream``; returns its port, what each side sent, and an event
    set once the server closed its side."""
    seen = {"client": bytearray(), "server": bytearray()}
    done = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def pump(src: socket.socket, dst: socket.socket, log: bytearray) -> None:
        while data := src.recv(1 << 16):
            log += data
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)

    def run() -> None:
        client, _ = listener.accept()
        server = socket.create_connection(upstream)
        back = threading.Thread(target=pump, args=(server, client, seen["server"]), daemon=True)
        back.start()
        pump(client, server, seen["client"])
        back.join()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1], seen, done


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        store = TieredStore(d, hot_bytes=4 << 20, warm_bytes=4 << 20, cold_bytes=32 << 20, prefault=False)
        running = create_server(store, "127.0.0.1:0")
        try:
            with Client(f"127.0.0.1:{running.port}", local="never") as client:
                answer = client._run(core.open_data_call(), None)
            port, seen, done = relay(("127.0.0.1", answer.tcp_port))
            answer.tcp_port, answer.unix_path = port, ""
            conn = Connection.open(answer, "127.0.0.1", None, 5.0, unix=False)
            items = [(b"greeting", b"hello, data plane", None), (b"vector", np.arange(4, dtype="<f4"), None)]
            conn.put_many("default", items)
            got = conn.get_many("default", [b"greeting", b"vector", b"absent"], True, None)
            assert got[0] == b"hello, data plane" and got[1].tolist() == [0, 1, 2, 3] and got[2] is None
            conn.close()
            assert done.wait(10), "the relay did not see the connection end"
        finally:
            running.stop(0)
            store.close()
    out = ROOT / "docs" / "dataplane-exchange.json"
    out.write_text(
        json.dumps(
            {
                "about": "bytes each side sent on one data-plane connection (hex); see docs/dataplane.md",
                "client": seen["client"].hex(),
                "server": seen["server"].hex(),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}: client sent {len(seen['client'])} bytes, server {len(seen['server'])}")


if __name__ == "__main__":
    main()
