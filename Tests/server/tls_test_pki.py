"""A throwaway PKI for TLS tests, made with the openssl CLI: a CA, node certificates for
127.0.0.1 / localhost usable as server and client certificates, and a rogue CA with a node
certificate of its own."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=d)


def _make_node(d: Path, name: str, ca: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


def make_test_pki(d: Path) -> Path:
    """Writes ca.pem, node1/node2/node3 .pem + .key (signed by ca), rogue-ca.pem and rogue
    .pem + .key (signed by rogue-ca) into `d`; returns `d`."""
    _make_ca(d, "ca")
    _make_ca(d, "rogue-ca")
    for name in ("node1", "node2", "node3"):
        _make_node(d, name, "ca")
    _make_node(d, "rogue", "rogue-ca")
    return d
