"""TLS end to end (issue 18 item 3): a Swift master and a Swift worker with --tls_cert /
--tls_key / --tls_ca and a cluster key. The worker registers over HTTPS, the master and the
worker speak gRPC over mutual TLS, and the official `openai` client chats over HTTPS trusting
the test CA, getting the same greedy text as the shared plaintext server. Plain HTTP to the
HTTPS port, and gRPC callers without a certificate of the CA, are refused."""

from __future__ import annotations

import ssl

import grpc
import httpx
import openai
import pytest
from tllm_server_helpers import REQUEST_TIMEOUT, Node, free_port, logs, user, wait_until_generating
from tls_test_pki import make_test_pki

KEY = "tls-cluster-key"
PROMPT = "What is the capital of France?"
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _tls(pki, node: str) -> list[str]:
    return ["--tls_cert", str(pki / f"{node}.pem"), "--tls_key", str(pki / f"{node}.key"),
            "--tls_ca", str(pki / "ca.pem")]


@pytest.fixture
def tls_cluster(server_bin, client_bin, model_path, log_dir, pki):
    http_port, grpc_port, worker_port = free_port(), free_port(), free_port()
    master = Node("tls-master", [str(server_bin), "--model_path", str(model_path), "--http_port", str(http_port),
                                 "--grpc_port", str(grpc_port), "--hostname", "127.0.0.1", "--client_size", "1",
                                 "--threads", "1", "--cluster_key", KEY, *_tls(pki, "node1")], log_dir)
    worker = Node("tls-worker", [str(client_bin), "--master_addr", f"https://127.0.0.1:{http_port}",
                                 "--hostname", "127.0.0.1", "--grpc_port", str(worker_port), "--threads", "1",
                                 "--cluster_key", KEY, *_tls(pki, "node2")], log_dir)
    http = httpx.Client(base_url=f"https://127.0.0.1:{http_port}", verify=ssl.create_default_context(
        cafile=str(pki / "ca.pem")), trust_env=False, timeout=REQUEST_TIMEOUT)
    nodes = [master, worker]
    try:
        wait_until_generating(http, nodes, 120, "tls")
        yield http, nodes, http_port, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{worker_port}"
    finally:
        http.close()
        codes = [n.stop() for n in reversed(nodes)]
        assert codes == [0, 0], f"exit codes {codes}:\n{logs(nodes)}"


def _health_code(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        try:
            channel.unary_unary("/schemas.RPCService/Health")(b"", timeout=10,
                                                               metadata=[("authorization", f"Bearer {KEY}")])
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()


def test_tls_cluster_serves_openai_over_https(tls_cluster, server, pki):
    http, nodes, http_port, master_grpc, worker_grpc = tls_cluster
    with server.http() as local:
        r = local.post("/v1/chat/completions", json={"messages": user(PROMPT), "max_tokens": MAX_TOKENS})
        assert r.status_code == 200, r.text
        reference = r.json()["choices"][0]["message"]["content"]

    client = openai.OpenAI(base_url=f"https://127.0.0.1:{http_port}/v1", api_key="unused", max_retries=0,
                           http_client=httpx.Client(verify=ssl.create_default_context(cafile=str(pki / "ca.pem")),
                                                    trust_env=False, timeout=REQUEST_TIMEOUT))
    answer = client.chat.completions.create(model="any", messages=user(PROMPT), max_tokens=MAX_TOKENS,
                                            temperature=0)
    assert answer.choices[0].message.content == reference
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model="any", messages=user(PROMPT), max_tokens=MAX_TOKENS, temperature=0, stream=True) if chunk.choices)
    assert streamed == reference

    # Plain HTTP on the HTTPS port gets no answer; neither does a client that does not trust the CA.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=10, trust_env=False)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{http_port}/health", timeout=10, trust_env=False)

    # gRPC: mutual TLS. A caller with a certificate of the CA (and the key) is served; without a
    # certificate, with one of another CA, or in plaintext, it is not.
    ca, read = (pki / "ca.pem").read_bytes(), (lambda name: (pki / name).read_bytes())
    member = grpc.ssl_channel_credentials(ca, read("node3.key"), read("node3.pem"))
    for target in (master_grpc, worker_grpc):
        assert _health_code(target, member) == grpc.StatusCode.OK, logs(nodes)
        assert _health_code(target, grpc.ssl_channel_credentials(ca)) == grpc.StatusCode.UNAVAILABLE
        assert _health_code(target, grpc.ssl_channel_credentials(ca, read("rogue.key"), read("rogue.pem"))) \
            == grpc.StatusCode.UNAVAILABLE
        assert _health_code(target, None) == grpc.StatusCode.UNAVAILABLE
    assert all(n.alive() for n in nodes)
