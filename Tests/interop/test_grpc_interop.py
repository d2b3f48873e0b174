"""grpcio (Python) <-> tllm-rpc (Swift) interop over the tllm RPCService.

Contract: shared/spec/tllm-protocol.md section 2. See conftest.py for fixtures.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import grpc
import numpy as np
import pytest

from grpc_peer_helpers import (
    LZ4_FRAME_MAGIC,
    LZ4_MIN_ROWS,
    RPC_TIMEOUT,
    decode_tensor,
    encode_tensor,
    make_channel,
    to_f16,
    wait_ready,
)

RELAY_TIMEOUT = 60.0  # seconds for a relayed Forward to reach the Python next hop


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this host")

TARGET_KINDS = [
    "localhost",
    pytest.param("ipv6", marks=needs_ipv6),
    "ipv4",
    "unix",
]


def target_for(kind: str, port: int, unix_path: str) -> str:
    return {
        "localhost": f"localhost:{port}",
        "ipv6": f"[::1]:{port}",
        "ipv4": f"127.0.0.1:{port}",
        "unix": f"unix://{unix_path}",
    }[kind]


# --------------------------------------------------------------------------
# Test data


ONE = np.float32(1.0)
# Finite float32 values that probe the f32 -> f16 conversion (round to nearest even,
# subnormals, signed zero, the largest finite half).
FINITE_EDGE_VALUES = np.array(
    [
        0.0,
        -0.0,
        65504.0,  # f16 max
        -65504.0,
        65519.0,  # largest f32 that still rounds down to 65504
        6.103515625e-05,  # smallest f16 normal
        6.0e-05,  # subnormal
        5.960464477539063e-08,  # smallest f16 subnormal
        2.9802322387695312e-08,  # exactly half the smallest subnormal: ties to even -> 0
        4.470348358154297e-08,  # 0.75 * smallest subnormal -> smallest subnormal
        8.940696716308594e-08,  # 1.5 * smallest subnormal: tie -> 2 * smallest (even)
        1e-10,  # underflow -> 0
        -1e-10,  # underflow -> -0
        ONE + np.float32(2.0**-11),  # tie between 1 and 1+2^-10 -> 1 (even)
        ONE + np.float32(3 * 2.0**-11),  # tie -> 1 + 2^-9 (even)
        ONE + np.float32(2.0**-11) + np.float32(2.0**-20),  # just above the tie -> up
        -(ONE + np.float32(2.0**-11)),
        2049.0,  # tie between 2048 and 2050 -> 2048
        2051.0,  # tie -> 2052
        0.1,
        1.0 / 3.0,
        -2.5e-06,
        np.pi,
    ],
    dtype=np.float32,
)
# Values with no finite float16 counterpart. The spec does not say whether a node must
# carry them; the tests below accept "relayed bit-exactly" or "refused cleanly".
NONFINITE_VALUES = np.array([np.inf, -np.inf, np.nan, 65520.0, 1e5, -1e5], dtype=np.float32)


def make_tensor(shape, seed=1234, special=None) -> np.ndarray:
    """float32 [rows, hidden], normal * 3 with a fixed seed; `special` values are written
    at the start (and, for large tensors, also at the end) of the buffer."""
    x = (np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) * 3).astype(np.float32)
    if special is not None and len(special):
        flat = x.reshape(-1)
        n = min(flat.size, special.size)
        flat[:n] = special[:n]
        if flat.size > 2 * special.size:
            flat[-n:] = special[:n]
    return x


def request_ids(rows: int, n_requests: int):
    """uuid_list and input_ids_list whose lengths sum to rows (the spec's meaning)."""
    n_requests = max(1, min(n_requests, rows))
    sizes = [rows // n_requests] * n_requests
    sizes[-1] += rows - sum(sizes)
    uuids = [f"req-{i}-{rows}" for i in range(n_requests)]
    ids, nxt = [], 1000
    for s in sizes:
        ids.append(list(range(nxt, nxt + s)))
        nxt += s
    return uuids, ids


def forward_request(pb, x: np.ndarray, uuids, ids):
    data, shape = encode_tensor(x)
    return pb.pb2.ForwardRequest(
        uuid_list=uuids,
        input_ids_list=[pb.pb2.InputIds(input_ids=i) for i in ids],
        hidden_states=pb.pb2.BFloat16Tensor(data=data, shape=shape),
    )


def assert_forward_matches(req, x: np.ndarray, uuids, ids):
    """A received ForwardRequest carries x (as f16, bit-exact), uuids and ids."""
    assert list(req.uuid_list) == list(uuids)
    assert [list(i.input_ids) for i in req.input_ids_list] == [list(i) for i in ids]
    hs = req.hidden_states
    assert list(hs.shape) == list(x.shape)
    is_lz4 = hs.data[:4] == LZ4_FRAME_MAGIC
    assert is_lz4 == (x.shape[0] >= LZ4_MIN_ROWS), (
        f"rows={x.shape[0]}: payload {'is' if is_lz4 else 'is not'} an LZ4 frame "
        f"(first bytes {hs.data[:8].hex()}, {len(hs.data)} bytes)"
    )
    if not is_lz4:
        assert len(hs.data) == x.size * 2
    got = decode_tensor(hs.data, hs.shape)
    want = to_f16(x)
    assert got.shape == want.shape
    diff = got.view(np.uint16) != want.view(np.uint16)
    if diff.any():
        idx = np.argwhere(diff)[:8]
        details = ", ".join(
            f"{tuple(i)}: x={x[tuple(i)]!r} want=0x{want.view(np.uint16)[tuple(i)]:04x} "
            f"got=0x{got.view(np.uint16)[tuple(i)]:04x}"
            for i in idx
        )
        pytest.fail(f"{int(diff.sum())} of {diff.size} f16 values differ, e.g. {details}")


def call_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as ei:
        fn(*args, **kwargs)
    return ei.value


def health_ok(pb, channel):
    resp = pb.grpc.RPCServiceStub(channel).Health(pb.pb2.Empty(), timeout=RPC_TIMEOUT)
    assert (resp.msg, resp.status) == ("Healthy", 200)


# --------------------------------------------------------------------------
# Sanity of the Python-side codec (no Swift needed)


@pytest.mark.parametrize("shape", [(1, 576), (63, 8), (64, 8), (512, 4096)])
def test_python_codec_rules(shape):
    x = make_tensor(shape, special=np.concatenate([FINITE_EDGE_VALUES, NONFINITE_VALUES]))
    data, sh = encode_tensor(x)
    assert sh == list(shape)
    assert (data[:4] == LZ4_FRAME_MAGIC) == (shape[0] >= 64)
    if shape[0] < 64:
        assert data == to_f16(x).tobytes()
    got = decode_tensor(data, sh)
    assert np.array_equal(got.view(np.uint16), to_f16(x).view(np.uint16))


def test_python_server_fixture_records(pb, py_server):
    """The recording grpcio server answers per spec and records field by field (no Swift needed)."""
    for target in (py_server.tcp_target, py_server.unix_target):
        with make_channel(target) as ch:
            stub = pb.grpc.RPCServiceStub(ch)
            assert stub.Health(pb.pb2.Empty(), timeout=5).status == 200
            r = stub.ImageForward(pb.pb2.ImageForwardRequest(uuid=["x"]), timeout=5)
            assert (r.msg, r.status) == ("unsupported", 501)
            x = make_tensor((2, 4))
            stub.Forward(forward_request(pb, x, ["a"], [[1, 2]]), timeout=5)
    fwd = py_server.servicer.wait_for_forwards(2, timeout=5)
    assert_forward_matches(fwd[-1], x, ["a"], [[1, 2]])


# --------------------------------------------------------------------------
# grpcio client -> Swift server


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_grpcio_client_all_rpcs(pb, kind, start_swift_server, short_tmp, py_server):
    sock = str(short_tmp / "swift.sock")
    srv = start_swift_server(listen=["[::]:0"], unix=[sock])
    assert srv.unix_paths == [sock]
    target = target_for(kind, srv.port, sock)
    with make_channel(target) as ch:
        wait_ready(ch)
        stub = pb.grpc.RPCServiceStub(ch)

        r = stub.Health(pb.pb2.Empty(), timeout=RPC_TIMEOUT)
        assert (r.msg, r.status) == ("Healthy", 200)

        r = stub.Status(pb.pb2.StatusRequest(uuid=["a", "b"], pp_idx=1, cost_time=0.5), timeout=RPC_TIMEOUT)
        assert (r.msg, r.status) == ("Successful", 200)

        r = stub.SetConfig(
            pb.pb2.SetConfigRequest(forward_url=py_server.tcp_target, master_url=py_server.tcp_target, pp_rank=0),
            timeout=RPC_TIMEOUT,
        )
        assert (r.msg, r.status) == ("SetConfig Completed", 200)

        x = make_tensor((3, 16))
        r = stub.Forward(forward_request(pb, x, ["a", "b"], [[1, 2], [3]]), timeout=RPC_TIMEOUT)
        assert (r.msg, r.status) == ("Forward Completed", 200)
        relayed = py_server.servicer.wait_for_forwards(1, RELAY_TIMEOUT)
        assert_forward_matches(relayed[0], x, ["a", "b"], [[1, 2], [3]])

        e = call_error(
            stub.ImageForward,
            pb.pb2.ImageForwardRequest(uuid=["a"], seq_len=3, height=4, width=5),
            timeout=RPC_TIMEOUT,
        )
        assert e.code() == grpc.StatusCode.UNIMPLEMENTED, (e.code(), e.details())

        nope = ch.unary_unary("/schemas.RPCService/Nope", request_serializer=None, response_deserializer=None)
        e = call_error(nope, b"", timeout=RPC_TIMEOUT)
        assert e.code() == grpc.StatusCode.UNIMPLEMENTED, (e.code(), e.details())

        # Still usable after the errors.
        health_ok(pb, ch)
    assert srv.alive()


@pytest.mark.parametrize(
    "path",
    ["/schemas.RPCService/Nope", "/schemas.Other/Health", "/RPCService/Health", "/schemas.RPCService/health"],
)
def test_unknown_method_unimplemented(pb, swift_server, path):
    with make_channel(f"127.0.0.1:{swift_server.port}") as ch:
        m = ch.unary_unary(path, request_serializer=None, response_deserializer=None)
        e = call_error(m, b"", timeout=RPC_TIMEOUT)
        assert e.code() == grpc.StatusCode.UNIMPLEMENTED, (e.code(), e.details())
        health_ok(pb, ch)


def test_odd_but_valid_requests(pb, start_swift_server, short_tmp):
    """Valid but unusual encodings (negative int32 = 10-byte varint, unicode, empty body) are accepted."""
    sock = str(short_tmp / "s.sock")
    srv = start_swift_server(listen=[], unix=[sock])
    with make_channel(f"unix://{sock}") as ch:
        stub = pb.grpc.RPCServiceStub(ch)
        r = stub.Status(
            pb.pb2.StatusRequest(uuid=["é-✓", "", "x" * 1000], pp_idx=-1, cost_time=-1e30), timeout=RPC_TIMEOUT
        )
        assert (r.msg, r.status) == ("Successful", 200)
        r = stub.Status(pb.pb2.StatusRequest(), timeout=RPC_TIMEOUT)  # all defaults: empty body
        assert (r.msg, r.status) == ("Successful", 200)


def test_setconfig_empty_request(pb, start_swift_server):
    """Spec 2: a worker answers SetConfig with {"SetConfig Completed", 200}; no error case is defined.

    An all-default SetConfigRequest (empty body on the wire) is valid protobuf.
    """
    srv = start_swift_server(listen=["127.0.0.1:0"])
    with make_channel(f"127.0.0.1:{srv.port}") as ch:
        r = pb.grpc.RPCServiceStub(ch).SetConfig(pb.pb2.SetConfigRequest(), timeout=RPC_TIMEOUT)
        assert (r.msg, r.status) == ("SetConfig Completed", 200)
        health_ok(pb, ch)


def test_metadata_and_compression(pb, swift_server):
    """Custom ASCII and -bin metadata are accepted; a compressed request (the spec mandates identity
    encoding) is either decoded or refused with UNIMPLEMENTED, and the connection stays usable."""
    with make_channel(f"127.0.0.1:{swift_server.port}") as ch:
        stub = pb.grpc.RPCServiceStub(ch)
        r, call = stub.Health.with_call(
            pb.pb2.Empty(),
            timeout=RPC_TIMEOUT,
            metadata=[("x-tllm-test", "v" * 4000), ("x-tllm-test-bin", bytes(range(256)) * 4)],
        )
        assert (r.msg, r.status) == ("Healthy", 200) and call.code() == grpc.StatusCode.OK
        req = pb.pb2.StatusRequest(uuid=["a" * 2000], pp_idx=1, cost_time=0.25)
        try:
            r = stub.Status(req, timeout=RPC_TIMEOUT, compression=grpc.Compression.Gzip)
            assert (r.msg, r.status) == ("Successful", 200)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNIMPLEMENTED, (e.code(), e.details())
        health_ok(pb, ch)


def test_concurrent_calls(pb, swift_server):
    """64 concurrent unary calls on one HTTP/2 connection plus 16 on separate connections."""
    x = make_tensor((4, 64))
    req = forward_request(pb, x, ["c"], [[1, 2, 3, 4]])
    with make_channel(f"127.0.0.1:{swift_server.port}") as ch:
        stub = pb.grpc.RPCServiceStub(ch)
        futs = [stub.Forward.future(req, timeout=RPC_TIMEOUT) for _ in range(48)]
        futs += [stub.Health.future(pb.pb2.Empty(), timeout=RPC_TIMEOUT) for _ in range(16)]
        for f in futs:
            assert f.result().status == 200
    host = "[::1]" if _has_ipv6_loopback() else "localhost"
    chans = [make_channel(f"{host}:{swift_server.port}") for _ in range(16)]
    try:
        futs = [pb.grpc.RPCServiceStub(c).Health.future(pb.pb2.Empty(), timeout=RPC_TIMEOUT) for c in chans]
        for f in futs:
            assert f.result().msg == "Healthy"
    finally:
        for c in chans:
            c.close()


def test_multiple_listeners(pb, start_swift_server, short_tmp):
    socks = [str(short_tmp / "a.sock"), str(short_tmp / "b.sock")]
    listen = ["127.0.0.1:0"] + (["[::1]:0"] if _has_ipv6_loopback() else ["localhost:0"])
    srv = start_swift_server(listen=listen, unix=socks)
    assert len(srv.tcp_ports) == 2 and sorted(srv.unix_paths) == sorted(socks)
    hosts = ["127.0.0.1", "[::1]" if _has_ipv6_loopback() else "localhost"]
    targets = [f"{h}:{p}" for h, p in zip(hosts, srv.tcp_ports)] + [f"unix://{s}" for s in socks]
    for t in targets:
        with make_channel(t) as ch:
            health_ok(pb, ch)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_graceful_stop(pb, start_swift_server, sig):
    srv = start_swift_server(listen=["127.0.0.1:0"])
    with make_channel(f"127.0.0.1:{srv.port}") as ch:
        health_ok(pb, ch)  # an open connection must not keep it alive
        srv.proc.send_signal(getattr(signal, sig))
        try:
            rc = srv.proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"tllm-rpc serve did not stop within 10 s of {sig}")
    assert rc == 0, f"exit status after {sig}: {rc}; stderr:\n{srv.stderr_text()}"


# --------------------------------------------------------------------------
# Swift client (tllm-rpc call) -> Python server


def _check_ok(res, msg, status=200):
    assert res.returncode == 0, f"rc={res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    assert res.json == {"msg": msg, "status": status}, res.stdout


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_swift_client_all_rpcs(pb, py_server, tllm_call, kind):
    target = target_for(kind, py_server.port, py_server.unix_path)
    sv = py_server.servicer

    _check_ok(tllm_call(target, "Health", {}), "Healthy")
    assert sv.requests("Health") == [pb.pb2.Empty()]

    _check_ok(tllm_call(target, "Status", {"uuid": ["a", "b"], "pp_idx": 1, "cost_time": 0.5}), "Successful")
    (st,) = sv.requests("Status")
    assert list(st.uuid) == ["a", "b"] and st.pp_idx == 1 and st.cost_time == 0.5

    _check_ok(
        tllm_call(
            target,
            "SetConfig",
            {"forward_url": "127.0.0.1:25002", "master_url": "unix:///tmp/tllm_master_grpc_uds.sock", "pp_rank": 2},
        ),
        "SetConfig Completed",
    )
    (sc,) = sv.requests("SetConfig")
    assert (sc.forward_url, sc.master_url, sc.pp_rank) == (
        "127.0.0.1:25002",
        "unix:///tmp/tllm_master_grpc_uds.sock",
        2,
    )

    _check_ok(
        tllm_call(target, "Forward", {"uuid_list": ["a", "b"], "input_ids_list": [{"input_ids": [1, 2]}, {"input_ids": [3]}]}),
        "Forward Completed",
    )
    (fw,) = sv.requests("Forward")
    assert list(fw.uuid_list) == ["a", "b"]
    assert [list(i.input_ids) for i in fw.input_ids_list] == [[1, 2], [3]]
    assert fw.hidden_states.data == b"" and list(fw.hidden_states.shape) == []

    _check_ok(
        tllm_call(target, "ImageForward", {"uuid": ["img"], "seq_len": 7, "height": 512, "width": 256}),
        "unsupported",
        501,
    )
    (im,) = sv.requests("ImageForward")
    assert list(im.uuid) == ["img"] and (im.seq_len, im.height, im.width) == (7, 512, 256)

    assert [r.method for r in sv.records] == ["Health", "Status", "SetConfig", "Forward", "ImageForward"]


def test_swift_client_edge_values(pb, py_server, tllm_call):
    """Negative / extreme int32, non-ASCII strings, empty lists and a float32-rounded cost_time."""
    t = py_server.tcp_target
    sv = py_server.servicer

    _check_ok(tllm_call(t, "Status", {"uuid": ["é-✓-🚀", ""], "pp_idx": -1, "cost_time": 0.1}), "Successful")
    (st,) = sv.requests("Status")
    assert list(st.uuid) == ["é-✓-🚀", ""]
    assert st.pp_idx == -1
    assert st.cost_time == float(np.float32(0.1))

    _check_ok(tllm_call(t, "SetConfig", {"forward_url": "[fe80::1]:25003", "pp_rank": -2147483648}), "SetConfig Completed")
    (sc,) = sv.requests("SetConfig")
    assert (sc.forward_url, sc.master_url, sc.pp_rank) == ("[fe80::1]:25003", "", -2147483648)

    ids = [[2147483647, -2147483648, 0, -1], [], [128000]]
    _check_ok(
        tllm_call(t, "Forward", {"uuid_list": ["u1", "u2", "u3"], "input_ids_list": [{"input_ids": i} for i in ids]}),
        "Forward Completed",
    )
    (fw,) = sv.requests("Forward")
    assert list(fw.uuid_list) == ["u1", "u2", "u3"]
    assert [list(i.input_ids) for i in fw.input_ids_list] == ids

    _check_ok(tllm_call(t, "Status", {}), "Successful")
    st2 = sv.requests("Status")[1]
    assert st2 == pb.pb2.StatusRequest()


def test_swift_client_reports_grpc_errors(py_server, tllm_call, swift_server):
    py_server.servicer.abort_with["Health"] = (grpc.StatusCode.UNAVAILABLE, "down for the test")
    res = tllm_call(py_server.tcp_target, "Health", {})
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert res.json == {"grpc_status": 14, "grpc_message": "down for the test"}

    py_server.servicer.abort_with["Status"] = (grpc.StatusCode.INVALID_ARGUMENT, "bad ✓ status")
    res = tllm_call(py_server.unix_target, "Status", {"uuid": ["a"]})
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert res.json == {"grpc_status": 3, "grpc_message": "bad ✓ status"}

    res = tllm_call(f"127.0.0.1:{swift_server.port}", "ImageForward", {"uuid": ["a"]})
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert res.json["grpc_status"] == 12, res.stdout


def test_swift_client_deadline(py_server, tllm_call):
    """--timeout becomes a grpc-timeout the grpcio server sees, and DEADLINE_EXCEEDED comes back."""
    py_server.servicer.delay["Health"] = 60.0
    t0 = time.monotonic()
    res = tllm_call(py_server.tcp_target, "Health", {}, timeout=1)
    elapsed = time.monotonic() - t0
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert res.json.get("grpc_status") == 4, res.stdout  # DEADLINE_EXCEEDED
    # Far from the servicer's 60 s: the deadline ended the call (generous for a busy machine).
    assert elapsed < 30, f"took {elapsed:.1f}s with --timeout 1"


def test_swift_client_unreachable_target(tllm_call):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    res = tllm_call(f"127.0.0.1:{port}", "Health", {}, timeout=5)
    assert time.monotonic() - t0 < 5 + 10, "tllm-rpc call overran its --timeout"
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert res.json.get("grpc_status") == 14, res.stdout  # UNAVAILABLE


# --------------------------------------------------------------------------
# Tensor round trips

SHAPES = [
    pytest.param((512, 4096), None, id="512x4096-lz4"),
    pytest.param((1, 576), None, id="1x576-raw"),
    pytest.param((63, 128), FINITE_EDGE_VALUES, id="63x128-raw-edge"),
    pytest.param((64, 128), FINITE_EDGE_VALUES, id="64x128-lz4-edge"),
]


@pytest.mark.parametrize("shape,special", SHAPES)
@pytest.mark.parametrize("next_hop", ["tcp", "unix"])
def test_relay_python_swift_python(pb, start_swift_server, py_server, shape, special, next_hop):
    """grpcio client -> Swift relay (SetConfig forward_url = Python server) -> grpcio server."""
    srv = start_swift_server(listen=["[::]:0"])
    x = make_tensor(shape, seed=42, special=special)
    uuids, ids = request_ids(shape[0], 3)
    fwd_url = py_server.tcp_target if next_hop == "tcp" else py_server.unix_target
    with make_channel(f"localhost:{srv.port}") as ch:
        stub = pb.grpc.RPCServiceStub(ch)
        r = stub.SetConfig(
            pb.pb2.SetConfigRequest(forward_url=fwd_url, master_url=py_server.tcp_target, pp_rank=0),
            timeout=RPC_TIMEOUT,
        )
        assert r.status == 200
        req = forward_request(pb, x, uuids, ids)
        assert (req.hidden_states.data[:4] == LZ4_FRAME_MAGIC) == (shape[0] >= 64)
        r = stub.Forward(req, timeout=RPC_TIMEOUT)
        assert (r.msg, r.status) == ("Forward Completed", 200)
        (relayed,) = py_server.servicer.wait_for_forwards(1, RELAY_TIMEOUT)
    assert_forward_matches(relayed, x, uuids, ids)
    time.sleep(0.2)
    assert len(py_server.servicer.requests("Forward")) == 1, "relayed more than once"


def test_relay_many_sequential_and_concurrent(pb, start_swift_server, py_server):
    """40 Forwards (20 sequential, 20 concurrent) through the relay all arrive intact."""
    srv = start_swift_server(listen=["127.0.0.1:0"])
    sent = {}
    with make_channel(f"127.0.0.1:{srv.port}") as ch:
        stub = pb.grpc.RPCServiceStub(ch)
        assert stub.SetConfig(pb.pb2.SetConfigRequest(forward_url=py_server.tcp_target), timeout=RPC_TIMEOUT).status == 200
        for i in range(20):
            rows = [1, 3, 64, 70][i % 4]
            x = make_tensor((rows, 96), seed=i)
            sent[f"s{i}"] = x
            assert stub.Forward(forward_request(pb, x, [f"s{i}"], [list(range(rows))]), timeout=RPC_TIMEOUT).status == 200
        futs = []
        for i in range(20):
            rows = [2, 65][i % 2]
            x = make_tensor((rows, 96), seed=100 + i)
            sent[f"c{i}"] = x
            futs.append(stub.Forward.future(forward_request(pb, x, [f"c{i}"], [list(range(rows))]), timeout=RPC_TIMEOUT))
        for f in futs:
            assert f.result().status == 200
        relayed = py_server.servicer.wait_for_forwards(40, RELAY_TIMEOUT)
    by_uuid = {}
    for r in relayed:
        assert len(r.uuid_list) == 1
        assert r.uuid_list[0] not in by_uuid, f"{r.uuid_list[0]} relayed twice"
        by_uuid[r.uuid_list[0]] = r
    assert set(by_uuid) == set(sent)
    for u, x in sent.items():
        assert_forward_matches(by_uuid[u], x, [u], [list(range(x.shape[0]))])


@pytest.mark.parametrize("shape,special", SHAPES)
def test_swift_client_forward_tensor(pb, py_server, tllm_call, short_tmp, shape, special):
    """tllm-rpc call Forward --hidden-states-f32: Swift does the f32 -> f16 (+LZ4) encoding."""
    x = make_tensor(shape, seed=7, special=special)
    f = short_tmp / "x.f32"
    x.astype("<f4").tofile(f)
    uuids, ids = request_ids(shape[0], 2)
    req = {"uuid_list": uuids, "input_ids_list": [{"input_ids": i} for i in ids]}
    res = tllm_call(py_server.tcp_target, "Forward", req, hidden_f32=f, shape=shape)
    _check_ok(res, "Forward Completed")
    (got,) = py_server.servicer.wait_for_forwards(1, 5)
    assert_forward_matches(got, x, uuids, ids)


def test_swift_client_through_swift_relay(pb, start_swift_server, py_server, tllm_call, short_tmp):
    """Swift client -> Swift relay over unix -> Python server."""
    sock = str(short_tmp / "relay.sock")
    srv = start_swift_server(listen=[], unix=[sock])
    _check_ok(tllm_call(f"unix://{sock}", "SetConfig", {"forward_url": f"[::1]:{py_server.port}"
                        if _has_ipv6_loopback() else py_server.tcp_target}), "SetConfig Completed")
    x = make_tensor((100, 300), seed=9, special=FINITE_EDGE_VALUES)
    f = short_tmp / "x.f32"
    x.astype("<f4").tofile(f)
    res = tllm_call(f"unix://{sock}", "Forward", {"uuid_list": ["z"], "input_ids_list": [{"input_ids": list(range(100))}]},
                    hidden_f32=f, shape=x.shape)
    _check_ok(res, "Forward Completed")
    (got,) = py_server.servicer.wait_for_forwards(1, RELAY_TIMEOUT)
    assert_forward_matches(got, x, ["z"], [list(range(100))])
    assert srv.alive()


@pytest.mark.parametrize("shape", [(2, 16), (64, 16)], ids=["raw", "lz4"])
def test_nonfinite_payload_is_refused(pb, start_swift_server, py_server, shape):
    """f16 inf/-inf/NaN in hidden_states would poison every later stage: the Swift node
    refuses the step with INVALID_ARGUMENT naming the position, relays nothing, keeps serving."""
    srv = start_swift_server(listen=["127.0.0.1:0"])
    x = make_tensor(shape, seed=3, special=NONFINITE_VALUES)
    uuids, ids = request_ids(shape[0], 1)
    with make_channel(f"127.0.0.1:{srv.port}") as ch:
        stub = pb.grpc.RPCServiceStub(ch)
        assert stub.SetConfig(pb.pb2.SetConfigRequest(forward_url=py_server.tcp_target), timeout=RPC_TIMEOUT).status == 200
        with pytest.raises(grpc.RpcError) as info:
            stub.Forward(forward_request(pb, x, uuids, ids), timeout=RPC_TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (info.value.code(), info.value.details())
        assert "non-finite" in info.value.details() and "row" in info.value.details()
        time.sleep(0.5)
        assert py_server.servicer.requests("Forward") == [], "refused but relayed anyway"
        health_ok(pb, ch)


def test_swift_client_refuses_nonfinite_input(py_server, tllm_call, short_tmp):
    """float32 inf/NaN/overflowing values in --hidden-states-f32 are refused locally with a
    message (non-zero exit) and nothing is sent."""
    x = make_tensor((2, 16), seed=5, special=NONFINITE_VALUES)
    f = short_tmp / "x.f32"
    x.astype("<f4").tofile(f)
    uuids, ids = request_ids(2, 1)
    req = {"uuid_list": uuids, "input_ids_list": [{"input_ids": i} for i in ids]}
    res = tllm_call(py_server.tcp_target, "Forward", req, hidden_f32=f, shape=x.shape)
    assert res.returncode != 0
    assert "non-finite" in res.stderr or "overflows" in res.stderr, res.stderr
    assert py_server.servicer.requests() == [], "refused but sent anyway"


# --------------------------------------------------------------------------
# Limits and malformed input


def test_oversized_message_rejected(pb, swift_server):
    big = 129 * 1024 * 1024
    n = big // 2
    req = pb.pb2.ForwardRequest(
        uuid_list=["big"],
        input_ids_list=[pb.pb2.InputIds(input_ids=[1])],
        hidden_states=pb.pb2.BFloat16Tensor(data=bytes(big), shape=[1, n]),
    )
    opts = [("grpc.max_send_message_length", -1)]
    with make_channel(f"127.0.0.1:{swift_server.port}", opts) as ch:
        stub = pb.grpc.RPCServiceStub(ch)
        e = call_error(stub.Forward, req, timeout=60)
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (e.code(), e.details())
        health_ok(pb, ch)  # same connection still usable (flow control not stuck)
        # ...and a second oversize call right after behaves the same.
        e = call_error(stub.Forward, req, timeout=60)
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (e.code(), e.details())
        health_ok(pb, ch)
    with make_channel(f"127.0.0.1:{swift_server.port}") as ch:
        health_ok(pb, ch)
    assert swift_server.alive()


def test_message_just_under_limit_is_read(pb, swift_server):
    """A ~127 MiB request is within 128 MiB: it must be parsed, not RESOURCE_EXHAUSTED.

    The tensor is deliberately 2 bytes short, so the server answers INVALID_ARGUMENT
    without having to convert 64M values (cheap for a debug build).
    """
    rows, cols = 32, (127 * 1024 * 1024) // 2 // 32
    req = pb.pb2.ForwardRequest(
        uuid_list=["nearly-big"],
        input_ids_list=[pb.pb2.InputIds(input_ids=list(range(rows)))],
        hidden_states=pb.pb2.BFloat16Tensor(data=bytes(rows * cols * 2 - 2), shape=[rows, cols]),
    )
    assert req.ByteSize() < 128 * 1024 * 1024
    with make_channel(f"127.0.0.1:{swift_server.port}", [("grpc.max_send_message_length", -1)]) as ch:
        e = call_error(pb.grpc.RPCServiceStub(ch).Forward, req, timeout=60)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
        health_ok(pb, ch)


def _lz4(b):
    import lz4.frame

    return lz4.frame.compress(b)


MALFORMED = [
    pytest.param([2, 4], b"\x00\x01\x02", id="raw-3-bytes-for-2x4"),
    pytest.param([2, 4], bytes(17), id="raw-17-bytes-for-2x4"),
    pytest.param([2, 4], b"", id="raw-empty-for-2x4"),
    pytest.param([64, 4], bytes(64 * 4 * 2), id="rows64-not-lz4"),
    pytest.param([64, 4], _lz4(bytes(64 * 4 * 2 - 2)), id="rows64-lz4-wrong-length"),
    pytest.param([64, 4], _lz4(bytes(64 * 4 * 2))[:-6], id="rows64-lz4-truncated"),
    pytest.param([-2, 4], bytes(16), id="negative-rows"),
]


@pytest.mark.parametrize("shape,data", MALFORMED)
def test_malformed_tensor_invalid_argument(pb, swift_server, shape, data):
    req = pb.pb2.ForwardRequest(
        uuid_list=["bad"],
        input_ids_list=[pb.pb2.InputIds(input_ids=[1, 2])],
        hidden_states=pb.pb2.BFloat16Tensor(data=data, shape=shape),
    )
    with make_channel(f"127.0.0.1:{swift_server.port}") as ch:
        e = call_error(pb.grpc.RPCServiceStub(ch).Forward, req, timeout=RPC_TIMEOUT)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
        assert e.details(), "INVALID_ARGUMENT without a message"
        health_ok(pb, ch)
    assert swift_server.alive()


def test_garbage_protobuf_is_an_error_not_a_crash(pb, swift_server):
    """Bytes that are not a ForwardRequest: any non-OK status, and the server survives."""
    with make_channel(f"127.0.0.1:{swift_server.port}") as ch:
        raw = ch.unary_unary("/schemas.RPCService/Forward", request_serializer=None, response_deserializer=None)
        # field 3 (hidden_states), length-delimited, claims 100 bytes but has 2
        e = call_error(raw, b"\x1a\x64\x0a\x00", timeout=RPC_TIMEOUT)
        assert e.code() != grpc.StatusCode.OK
        health_ok(pb, ch)
    assert swift_server.alive()
