#!/usr/bin/env bash
# Installs the Debian packages the project builds with (idempotent); `--tests` adds those only
# the test suite needs.
# Swift itself is a prerequisite (Swift 6.x at /opt/swift or on PATH); Debian does not package it.
set -euo pipefail
packages=(
    pkg-config
    libnghttp2-dev      # HTTP/2 codec under our gRPC
    libprotobuf-c-dev   # protobuf runtime for the generated schemas code
    protobuf-c-compiler # protoc-c: regenerates / checks Sources/CTLLMProto
    liblz4-dev          # LZ4 frames of tensor payloads
    libopenblas-dev     # float matmuls
)
if [ "${1:-}" = "--tests" ]; then
    packages+=(
        chromium        # headless browser for the web page test (Tests/server/test_web_page.py)
        chromium-driver # its WebDriver, driven by Selenium
        iproute2        # ip / tc: network namespaces, veths and rate limits (Tests/server/test_netns_cluster.py)
        nftables        # nft: redirects a node's gRPC port to the delay proxy in that test
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross # builds the kernels for arm64 (Tests/neon)
        qemu-user       # qemu-aarch64: runs that build's NEON checks on this x86 machine
        openssl         # a throwaway CA and node certificates for the TLS tests (Tests/server/tls_test_pki.py)
    )
fi
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { [ -x /opt/swift/usr/bin/swift ] && echo "add /opt/swift/usr/bin to PATH" >&2; echo "swift is required" >&2; exit 1; }
