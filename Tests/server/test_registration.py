"""The master's registration routes (tllm-protocol.md section 3), driven the way a Python tllm
worker drives them: JSON over HTTP, with a listening gRPC port the master must reach."""

from __future__ import annotations

import socket

import pytest

from tllm_server_helpers import check_error_body


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_register_then_init(start_server, model_path, worker_port):
    s = start_server("registry", client_size=2)
    http = s.http()
    first = http.post("/register_client", json={"client_id": "py-a", "host": ["127.0.0.1"], "port": worker_port}).json()
    # The original's fields, plus our "instance": the master process, as /health's header names it.
    health = http.get("/health")
    assert first == {"pp_rank": 0, "start_idx": 0, "end_idx": 15, "msg": "success", "repo_path": str(model_path),
                     "instance": health.headers["tllm-instance"]}
    second = http.post(
        "/register_client",
        json={"client_id": "py-b", "host": ["10.255.255.1", "127.0.0.1"], "port": worker_port,
              "pp_rank": -1, "tp_rank": -1, "start_idx": -1, "end_idx": -1}).json()
    assert (second["pp_rank"], second["start_idx"], second["end_idx"]) == (1, 15, 30)

    ok = http.post("/init_model", json={"client_id": "py-a", "pp_rank": 0, "start_idx": 0, "end_idx": 15})
    assert ok.status_code == 200 and ok.json() == {"msg": "success", "status": 200}
    unknown = http.post("/init_model", json={"client_id": "ghost", "pp_rank": 0, "start_idx": 0, "end_idx": 15})
    assert unknown.json() == {"msg": "client not found", "status": 499}
    assert http.get("/health").status_code == 200


def test_reregistration_keeps_the_stated_range(start_server, worker_port):
    s = start_server("reregister", client_size=3)
    http = s.http()
    answer = http.post(
        "/register_client",
        json={"client_id": "survivor", "host": ["127.0.0.1"], "port": worker_port, "pp_rank": 2,
              "start_idx": 20, "end_idx": 30}).json()
    assert (answer["pp_rank"], answer["start_idx"], answer["end_idx"], answer["msg"]) == (2, 20, 30, "success")


def test_unreachable_worker_gets_ping_failed(server):
    answer = server.http(timeout=60).post(
        "/register_client", json={"client_id": "far", "host": ["127.0.0.1"], "port": closed_port()}).json()
    assert answer["msg"] == "ping failed"
    assert (answer["pp_rank"], answer["start_idx"], answer["end_idx"]) == (-1, -1, -1)


@pytest.mark.parametrize("body", [{"client_id": "x"}, {"client_id": "x", "host": ["h"], "port": "p"}])
def test_bad_registration_is_a_clear_error(http, body):
    check_error_body(http.post("/register_client", json=body), 400)
    check_error_body(http.post("/init_model", json={"client_id": "x", "start_idx": 3, "end_idx": 1, "pp_rank": 0}), 400)
