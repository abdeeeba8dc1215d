"""Perceptual hashes of images and Hamming-distance search for near duplicates."""

from __future__ import annotations

import cv2
import numpy as np


def phash(gray: np.ndarray) -> str:
    """64-bit DCT perceptual hash of a 2-D image as 16 hex digits (robust to resizing and mild contrast changes)."""
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hashes_to_array(hashes: list[str]) -> np.ndarray:
    """Hex hashes to a uint64 array (empty strings become 0)."""
    return np.array([int(h, 16) if h else 0 for h in hashes], dtype=np.uint64)


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two hex hashes."""
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def near_pairs(hashes: list[str], max_distance: int, chunk: int = 1024) -> list[tuple[int, int, int]]:
    """All index pairs ``(i, j, distance)`` with i < j whose hashes differ in at most ``max_distance`` bits."""
    values = hashes_to_array(hashes)
    valid = np.array([bool(h) for h in hashes])
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(values), chunk):
        block = values[start : start + chunk]
        dist = np.bitwise_count(block[:, None] ^ values[None, :])
        rows, cols = np.nonzero(dist <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if i < c and valid[i] and valid[c]:
                pairs.append((i, c, int(dist[r, c])))
    return pairs
