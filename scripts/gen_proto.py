"""Generate the Python code for proto/ into the memstore package: ``python scripts/gen_proto.py [OUT]``.

The proto package ``memstore.v1`` lands at ``memstore/v1/`` so its generated imports resolve inside the
installed library. A test regenerates into a temporary folder and fails when the committed files differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ["memstore/v1/memstore.proto"]


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--pyi_out={out}", *PROTOS]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
