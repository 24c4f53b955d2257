"""Output-embedding quantization for storage and search, with sentence-transformers' semantics.

`quantize_embeddings` gives the same arrays as `sentence_transformers.quantization.quantize_embeddings`:

* int8 / uint8: per-dimension ranges [min, max] (from `ranges`, else from `calibration_embeddings`, else
  from the embeddings themselves) are cut into 255 equal steps; a value becomes
  `trunc((x - min) / step)` (uint8) or `trunc((x - min) / step - 128)` (int8). Values outside the
  calibrated range are clipped (sentence-transformers lets them wrap around), which changes nothing inside it.
* ubinary: one bit per dimension, `x > 0`, packed 8 per byte, big-endian within a byte (`np.packbits`);
  binary: the same bytes minus 128 as int8. Each row is packed on its own, so a dim that is not a multiple
  of 8 is zero-padded per row (sentence-transformers packs the flattened array; equal when dim % 8 == 0).

`search_binary` ranks a packed corpus by Hamming distance to the query's sign bits, then rescores the best
`k * rescore_multiplier` candidates with the float query: dotted with the unpacked +-1 corpus bits
(sentence-transformers' rescoring), or with float/int8 corpus rows kept elsewhere (the usual recipe: bits in
memory, rescoring rows on disk).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from gemma_embed.errors import InputError

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = ("float32", "int8", "uint8", "binary", "ubinary")
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS, else an InputError naming the choices."""
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
    return precision


def _as_float_matrix(embeddings: object, name: str) -> np.ndarray:
    array = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings)
    if array.dtype.kind not in "f":
        raise InputError(f"{name} must be float embeddings, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[0] == 0:
        raise InputError(f"{name} must be a non-empty [n, dim] matrix, got shape {array.shape}")
    return array


def calibration_ranges(calibration_embeddings: np.ndarray) -> np.ndarray:
    """Per-dimension [min; max] ranges (shape [2, dim]) of a calibration set, for int8/uint8."""
    calib = _as_float_matrix(calibration_embeddings, "calibration_embeddings")
    return np.vstack((calib.min(axis=0), calib.max(axis=0)))


def quantize_embeddings(
    embeddings: np.ndarray,
    precision: Precision | str,
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Quantize float embeddings [n, dim] (or one vector [dim]) to `precision`.

    Returns float32 [n, dim], int8/uint8 [n, dim], or binary (int8) / ubinary (uint8) [n, ceil(dim / 8)].
    """
    check_precision(precision)
    single = np.ndim(embeddings) == 1
    array = _as_float_matrix(np.atleast_2d(embeddings) if single else embeddings, "embeddings")
    if precision == "float32":
        out = array.astype(np.float32)
    elif precision in ("int8", "uint8"):
        if ranges is None:
            ranges = calibration_ranges(array if calibration_embeddings is None else calibration_embeddings)
        ranges = np.asarray(ranges)
        if ranges.shape != (2, array.shape[1]):
            raise InputError(f"ranges must have shape (2, {array.shape[1]}), got {ranges.shape}")
        starts = ranges[0, :]
        steps = (ranges[1, :] - ranges[0, :]) / 255
        with np.errstate(divide="ignore", invalid="ignore"):  # a constant dimension has step 0
            levels = np.nan_to_num((array - starts) / steps, nan=0.0)
        levels = np.clip(levels, 0, 255)
        out = levels.astype(np.uint8) if precision == "uint8" else (levels - 128).astype(np.int8)
    else:
        packed = np.packbits(array > 0, axis=-1)
        out = packed if precision == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    return out[0] if single else out


def unpack_signs(bits: np.ndarray, dim: int) -> np.ndarray:
    """Packed ubinary/binary rows -> +-1 float32 rows [n, dim] (bit 1 -> +1, bit 0 -> -1)."""
    ubits = bits.view(np.uint8) if bits.dtype == np.uint8 else (bits.astype(np.int16) + 128).astype(np.uint8)
    return np.unpackbits(ubits, axis=-1, count=dim).astype(np.float32) * 2 - 1


def hamming_distances(query_bits: np.ndarray, corpus_bits: np.ndarray) -> np.ndarray:
    """Hamming distances [n_queries, n_corpus] between packed uint8 bit rows."""
    xor = np.bitwise_xor(query_bits[:, None, :], corpus_bits[None, :, :])
    return _POPCOUNT[xor].sum(axis=-1, dtype=np.int32)


def search_binary(
    query_float: np.ndarray,
    corpus_bits: np.ndarray,
    k: int = 10,
    rescore: bool = True,
    rescore_multiplier: int = 4,
    rescore_embeddings: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k corpus rows for each float query against a packed (ubinary or binary) corpus.

    Candidates: the `k * rescore_multiplier` smallest Hamming distances between the query's sign bits and
    the corpus bits (ties broken by corpus index). With `rescore`, candidates are re-ranked by the float
    query dotted with the corpus signs (+-1), or with `rescore_embeddings[candidate]` when given (float or
    int8 corpus rows, e.g. a memory-mapped array on disk), and the best k are kept; without it, the k nearest in Hamming
    distance. Returns (indices [n, k], scores [n, k]): scores are the rescored dot products, or the negated
    Hamming distances without rescoring. A single query vector gives [k]-shaped arrays.
    """
    single = np.ndim(query_float) == 1
    queries = _as_float_matrix(np.atleast_2d(query_float) if single else query_float, "query_float")
    corpus = np.asarray(corpus_bits)
    if corpus.dtype not in (np.uint8, np.int8) or corpus.ndim != 2:
        raise InputError("corpus_bits must be packed [n, dim / 8] uint8 (ubinary) or int8 (binary) rows")
    dim = queries.shape[1]
    if corpus.shape[1] != (dim + 7) // 8:
        raise InputError(f"corpus rows hold {corpus.shape[1] * 8} bits, queries have dim {dim}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    k = min(k, corpus.shape[0])
    ucorpus = quantize_embeddings(unpack_signs(corpus, dim), "ubinary")  # binary -> ubinary bytes
    distances = hamming_distances(quantize_embeddings(queries, "ubinary"), ucorpus)
    n_candidates = min(corpus.shape[0], k * max(1, rescore_multiplier)) if rescore else k
    candidates = np.argsort(distances, axis=1, kind="stable")[:, :n_candidates]
    if not rescore:
        return _maybe_single(candidates, -np.take_along_axis(distances, candidates, 1), single)
    if rescore_embeddings is None:
        rows = unpack_signs(ucorpus[candidates.reshape(-1)], dim)
    else:
        rows = np.asarray(rescore_embeddings)[candidates.reshape(-1)].astype(np.float32)
        if rows.shape[1] != dim:
            raise InputError(f"rescore_embeddings have dim {rows.shape[1]}, queries have dim {dim}")
    scores = np.einsum("qd,qcd->qc", queries.astype(np.float32), rows.reshape(*candidates.shape, dim))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return _maybe_single(
        np.take_along_axis(candidates, order, 1), np.take_along_axis(scores, order, 1), single
    )


def _maybe_single(indices: np.ndarray, scores: np.ndarray, single: bool) -> tuple[np.ndarray, np.ndarray]:
    return (indices[0], scores[0]) if single else (indices, scores)
