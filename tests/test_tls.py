"""TLS and mutual TLS with certificates made by openssl for the test."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import grpc
import pytest

from memstore import AsyncClient, Client, RemoteError, TieredStore
from memstore_server import create_server
from memstore_server.auth import create_token
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
    names = {  # certificate: (common name, extra subject alternative names)
        "server": ("localhost", ""),
        "client": ("any-client", ""),
        "acme": ("acme-client", ",URI:memstore://acme/write"),
        "beta": ("beta-client", ",URI:memstore://beta/read"),
    }
    for name, (cn, extra) in names.items():
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
        (d / f"{name}.ext").write_text(f"subjectAltName=DNS:localhost,IP:127.0.0.1{extra}\n")
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
    return {f"{n}.{ext}": str(d / f"{n}.{ext}") for n in names for ext in ("pem", "key")} | {
        "ca.pem": str(d / "ca.pem")
    }


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


@pytest.mark.parametrize("with_tokens", [False, True])
def test_client_certificate_names_the_tenant(tmp_path, certs, with_tokens) -> None:  # type: ignore[no-untyped-def]
    """A certificate with the URI SAN memstore://acme/write acts as tenant acme with the write role."""
    store = TieredStore(
        str(tmp_path / "s"), hot_bytes=4 * MiB, warm_bytes=4 * MiB, cold_bytes=32 * MiB, prefault=False
    )
    tokens = str(tmp_path / "tokens")
    token = create_token(tokens, "gamma", "write")
    tls = (certs["server.pem"], certs["server.key"], certs["ca.pem"])
    running = create_server(store, "127.0.0.1:0", tls=tls, auth_tokens=tokens if with_tokens else None)
    target = f"localhost:{running.port}"

    def client(name: str, **kw: Any) -> Client:
        return Client(
            target,
            tls_ca=certs["ca.pem"],
            tls_cert=certs[f"{name}.pem"],
            tls_key=certs[f"{name}.key"],
            local="never",
            retries=0,
            **kw,
        )

    try:
        with client("acme") as acme, client("beta") as beta, client("client") as plain:
            acme.put(b"k", b"acme's")
            assert acme.get(b"k") == b"acme's"
            assert beta.get(b"k") is None  # same raw key, other tenant: not there
            with pytest.raises(RemoteError) as info:
                beta.put(b"k", b"beta's")  # beta's certificate grants read only
            assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
            if with_tokens:  # a certificate naming no tenant is no credential when tokens are in use
                with pytest.raises(RemoteError) as info:
                    plain.get(b"k")
                assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
            else:  # mutual TLS alone: the CA vouches, the holder is the default tenant
                plain.put(b"k", b"default's")
                assert plain.get(b"k") == b"default's" and acme.get(b"k") == b"acme's"
        if with_tokens:  # a bearer token decides over the certificate it travels with
            with client("acme", token=token) as gamma:
                assert gamma.get(b"k") is None
                gamma.put(b"k", b"gamma's")
            with client("acme", token="ms_wrong") as bad:
                with pytest.raises(RemoteError) as info:
                    bad.get(b"k")
                assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
            with client("acme") as acme:
                assert acme.get(b"k") == b"acme's"
    finally:
        running.stop(1)
        store.close()
