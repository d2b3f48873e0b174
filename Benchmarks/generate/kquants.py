"""Quantisation of float32 weights to the K-quant block formats Q4_K, Q5_K and Q6_K, in numpy.

The `gguf` package reads these formats but cannot write them. This writes the same block
layouts (ggml-common.h) with a plain rounding quantiser, not llama.cpp's iterative search
(make_qkx2_quants): per group, the scale spans the group's range (its min clamped to at most 0
for Q4_K / Q5_K, its largest magnitude for Q6_K), and the super-block's scales are stored in 6
or 8 bits. Good enough for benchmark files with random weights and for test models; about
llama.cpp's error, not its exact bytes.

    blocks = quantize(weights, gguf.GGMLQuantizationType.Q4_K)   # rows of a multiple of 256
"""

import numpy as np

import gguf

QK_K = 256
T = gguf.GGMLQuantizationType


def _f16(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16)


def _pack_scales_k4(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """8 six-bit scales and mins per block into ggml's 12 bytes (get_scale_min_k4 reversed)."""
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    return out


def _quantize_k_asymmetric(x: np.ndarray, levels: int) -> tuple[np.ndarray, ...]:
    """Q4_K / Q5_K: groups of 32, x ≈ d·sc·q - dmin·m with q in [0, levels]."""
    n = x.shape[0]
    groups = x.reshape(n, 8, 32)
    low = np.minimum(groups.min(axis=-1), 0)
    scale = (groups.max(axis=-1) - low) / levels
    d = _f16(scale.max(axis=-1) / 63)
    dmin = _f16(-low.min(axis=-1) / 63)
    df, dminf = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df > 0, np.rint(scale / df), 0).clip(0, 63).astype(np.uint8)
        m = np.where(dminf > 0, np.rint(-low / dminf), 0).clip(0, 63).astype(np.uint8)
        step = (df * sc)[..., None]
        offset = (dminf * m)[..., None]
        q = np.where(step > 0, np.rint((groups + offset) / step), 0).clip(0, levels).astype(np.uint8)
    return d, dmin, _pack_scales_k4(sc, m), q


def _nibbles_k4(q: np.ndarray) -> np.ndarray:
    """Groups 2j and 2j + 1 share bytes 32j..32j+31 (low, high nibble)."""
    low4 = q & 0xF
    return (low4[:, 0::2, :] | (low4[:, 1::2, :] << 4)).reshape(q.shape[0], 128)


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    d, dmin, scales, q = _quantize_k_asymmetric(x, 15)
    return np.concatenate([d[:, None].view(np.uint8), dmin[:, None].view(np.uint8), scales, _nibbles_k4(q)], axis=1)


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    d, dmin, scales, q = _quantize_k_asymmetric(x, 31)
    high = (q >> 4).astype(np.uint8)  # (n, 8 groups, 32): bit g of qh[l]
    qh = np.zeros((x.shape[0], 32), dtype=np.uint8)
    for g in range(8):
        qh |= high[:, g, :] << g
    return np.concatenate(
        [d[:, None].view(np.uint8), dmin[:, None].view(np.uint8), scales, qh, _nibbles_k4(q)], axis=1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """Groups of 16, x ≈ d·sc·(q - 32), sc a signed byte, q 6 bits."""
    n = x.shape[0]
    groups = x.reshape(n, 16, 16)
    scale = np.abs(groups).max(axis=-1) / 31
    d = _f16(scale.max(axis=-1) / 127)
    df = d.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df > 0, np.rint(scale / df), 0).clip(-128, 127).astype(np.int8)
        step = (df * sc)[..., None]
        q = np.where(step != 0, np.rint(groups / step), 0).clip(-32, 31).astype(np.int16) + 32
    q = q.reshape(n, 2, 4, 32).astype(np.uint8)  # per 128: four runs of 32 weights
    ql = np.concatenate([q[:, :, 0] & 0xF | (q[:, :, 2] & 0xF) << 4, q[:, :, 1] & 0xF | (q[:, :, 3] & 0xF) << 4],
                        axis=2).reshape(n, 128)
    qh = (q[:, :, 0] >> 4 | (q[:, :, 1] >> 4) << 2 | (q[:, :, 2] >> 4) << 4 | (q[:, :, 3] >> 4) << 6).reshape(n, 64)
    return np.concatenate([ql, qh, sc.view(np.uint8), d[:, None].view(np.uint8)], axis=1)


QUANTIZERS = {T.Q4_K: quantize_q4_k, T.Q5_K: quantize_q5_k, T.Q6_K: quantize_q6_k}


def quantize(weights: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """`weights` (…, columns a multiple of 256) as uint8 blocks shaped (…, bytes per row)."""
    if qtype not in QUANTIZERS:
        return gguf.quants.quantize(weights, qtype)
    rows = weights.reshape(-1, weights.shape[-1]).astype(np.float32)
    if rows.shape[-1] % QK_K:
        raise ValueError(f"{qtype.name} needs rows of a multiple of {QK_K}, not {rows.shape[-1]}")
    blocks = QUANTIZERS[qtype](rows.reshape(-1, QK_K))
    return blocks.reshape(*weights.shape[:-1], -1)


if __name__ == "__main__":
    # Round trip through the gguf package's dequantiser: prints the error per type.
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 1024), dtype=np.float32) * 0.02
    for qtype in QUANTIZERS:
        back = gguf.quants.dequantize(quantize(w, qtype), qtype)
        rms = float(np.sqrt(np.mean((back - w) ** 2)) / np.sqrt(np.mean(w**2)))
        print(f"{qtype.name}: relative RMS error {rms:.4f}")
