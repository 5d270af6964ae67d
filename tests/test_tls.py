"""TLS and mutual TLS with certificates made by openssl for the test."""

from __future__ import annotations

import shutil
import subprocess

import grpc
import pytest

from memstore import AsyncClient, Client, RemoteError, TieredStore
from memstore_server import create_server
from tests.conftest import MiB

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _certs(d) -> dict[str, str]:  # type: ignore[no-untyped-def]
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=memstore-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    for name, cn in (("server", "localhost"), ("client", "acme-client")):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        (d / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.pem",
            "-extfile",
            f"{name}.ext",
        )
    return {n: str(d / n) for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):  # type: ignore[no-untyped-def]
    return _certs(tmp_path_factory.mktemp("certs"))


@pytest.mark.parametrize("mutual", [False, True])
def test_tls_round_trip_and_refusals(tmp_path, certs, mutual) -> None:  # type: ignore[no-untyped-def]
    store = TieredStore(
        str(tmp_path / "s"), hot_bytes=4 * MiB, warm_bytes=4 * MiB, cold_bytes=32 * MiB, prefault=False
    )
    tls = (certs["server.pem"], certs["server.key"], certs["ca.pem"] if mutual else None)
    running = create_server(store, "127.0.0.1:0", tls=tls)
    target = f"localhost:{running.port}"
    try:
        client_cert = {"tls_cert": certs["client.pem"], "tls_key": certs["client.key"]} if mutual else {}
        with Client(target, tls_ca=certs["ca.pem"], local="never", **client_cert) as c:
            c.put(b"k", b"secret")
            assert c.get(b"k") == b"secret"
        with Client(target, local="never", timeout=3, retries=0) as plain:  # no TLS: cannot talk
            with pytest.raises(RemoteError) as info:
                plain.get(b"k")
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
        if mutual:  # TLS but no client certificate: refused
            with Client(target, tls_ca=certs["ca.pem"], local="never", timeout=3, retries=0) as anon:
                with pytest.raises(RemoteError) as info:
                    anon.get(b"k")
                assert info.value.code == grpc.StatusCode.UNAVAILABLE

        import asyncio

        async def main() -> None:
            async with AsyncClient(target, tls_ca=certs["ca.pem"], local="never", **client_cert) as ac:
                assert await ac.get(b"k") == b"secret"

        asyncio.run(main())
    finally:
        running.stop(1)
        store.close()
