"""TLS and mutual TLS on the gRPC ports (issue 18 item 3), with Python grpcio as the peer both ways.

A test CA with node certificates (IP 127.0.0.1, DNS localhost) and a rogue CA with its own
certificate come from tls_test_pki.py (the openssl CLI).

- grpcio with `ssl_channel_credentials` calls `tllm-rpc serve --tls_cert/--tls_key` (TLS) and
  `... --tls_ca` (mutual TLS): with the right certificates the calls succeed, including a
  Forward whose tensor comes back intact through a relay; a plaintext client, a client that
  trusts another CA, and (mutual TLS) a client without a certificate or with a rogue one fail.
- `tllm-rpc call --tls_ca/--tls_cert/--tls_key` calls a grpcio server with
  `ssl_server_credentials(require_client_auth=True)`; without the CA it fails.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from grpc_peer_helpers import GRPC_OPTIONS, RecordingServicer, SwiftServer, tensor_message

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from tls_test_pki import make_test_pki  # noqa: E402

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    return make_test_pki(tmp_path_factory.mktemp("tls"))


def _read(d: Path, name: str) -> bytes:
    return (d / name).read_bytes()


def _serve_args(certs: Path, mutual: bool) -> list[str]:
    args = ["--tls_cert", str(certs / "node1.pem"), "--tls_key", str(certs / "node1.key")]
    return args + (["--tls_ca", str(certs / "ca.pem")] if mutual else [])


def _health(pb, target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = (grpc.secure_channel(target, credentials, options=GRPC_OPTIONS) if credentials
               else grpc.insecure_channel(target, options=GRPC_OPTIONS))
    with channel:
        try:
            pb.grpc.RPCServiceStub(channel).Health(pb.pb2.Empty(), timeout=TIMEOUT)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_grpcio_client_to_a_tls_server(pb, tllm_rpc_bin, certs, short_tmp, mutual):
    server = SwiftServer(tllm_rpc_bin, listen=("127.0.0.1:0",), log_dir=short_tmp,
                         extra_args=_serve_args(certs, mutual))
    try:
        target = f"127.0.0.1:{server.port}"
        ca, rogue_ca = _read(certs, "ca.pem"), _read(certs, "rogue-ca.pem")
        client = dict(private_key=_read(certs, "node2.key"), certificate_chain=_read(certs, "node2.pem"))
        rogue = dict(private_key=_read(certs, "rogue.key"), certificate_chain=_read(certs, "rogue.pem"))
        good = grpc.ssl_channel_credentials(root_certificates=ca, **client)
        assert _health(pb, target, good) == grpc.StatusCode.OK, server.stderr_text()
        # A server certificate this client cannot verify, and no TLS at all, both fail.
        assert _health(pb, target, grpc.ssl_channel_credentials(root_certificates=rogue_ca, **client)) \
            == grpc.StatusCode.UNAVAILABLE
        assert _health(pb, target, None) == grpc.StatusCode.UNAVAILABLE
        without_certificate = grpc.ssl_channel_credentials(root_certificates=ca)
        with_rogue = grpc.ssl_channel_credentials(root_certificates=ca, **rogue)
        expected = grpc.StatusCode.UNAVAILABLE if mutual else grpc.StatusCode.OK
        assert _health(pb, target, without_certificate) == expected
        assert _health(pb, target, with_rogue) == expected

        # A Forward's tensor arrives intact over TLS (the relay acknowledges after decoding it).
        x = np.linspace(-2, 2, 3 * 576, dtype=np.float32).reshape(3, 576)
        with grpc.secure_channel(target, good, options=GRPC_OPTIONS) as channel:
            stub = pb.grpc.RPCServiceStub(channel)
            request = pb.pb2.ForwardRequest(uuid_list=["tls-1"], hidden_states=tensor_message(pb, x))
            request.input_ids_list.add().input_ids.extend([1, 2, 3])
            response = stub.Forward(request, timeout=TIMEOUT)
            assert response.status == 200, response
        assert server.alive()
    finally:
        server.stop()


@pytest.fixture
def grpcio_tls_server(pb, certs):
    servicer = RecordingServicer(pb)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=GRPC_OPTIONS)
    pb.grpc.add_RPCServiceServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(_read(certs, "node1.key"), _read(certs, "node1.pem"))], root_certificates=_read(certs, "ca.pem"),
        require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(grace=1.0).wait(5.0)


def test_tllm_rpc_client_to_a_grpcio_mtls_server(grpcio_tls_server, tllm_call, certs):
    target, servicer = grpcio_tls_server
    tls = ["--tls_ca", str(certs / "ca.pem"), "--tls_cert", str(certs / "node2.pem"),
           "--tls_key", str(certs / "node2.key")]
    r = tllm_call(target, "Health", extra_args=tls, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.json["status"] == 200
    assert len(servicer.requests("Health")) == 1

    # Without our CA the server's certificate is refused; without a client certificate the
    # server refuses us: either way nothing reaches the servicer.
    for args in (["--tls_cert", str(certs / "node2.pem"), "--tls_key", str(certs / "node2.key")],
                 ["--tls_ca", str(certs / "ca.pem")], []):
        r = tllm_call(target, "Health", extra_args=args, timeout=5)
        assert r.returncode != 0, (args, r.stdout)
    assert len(servicer.requests("Health")) == 1


def test_unusable_tls_files_are_named(tllm_rpc_bin, certs, tmp_path):
    bad = tmp_path / "not-a-certificate.pem"
    bad.write_text("hello\n")
    p = subprocess.run([str(tllm_rpc_bin), "serve", "--listen", "127.0.0.1:0", "--tls_cert", str(bad),
                        "--tls_key", str(certs / "node1.key")], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and str(bad) in p.stderr, p.stderr
    p = subprocess.run([str(tllm_rpc_bin), "serve", "--listen", "127.0.0.1:0", "--tls_cert",
                        str(certs / "node1.pem")], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and "--tls_key" in p.stderr, p.stderr
