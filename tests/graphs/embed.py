"""A deterministic embedding for semantic-search tests: each word adds 1 to one of 16
dimensions chosen by a stable hash, so texts sharing words are close."""

from __future__ import annotations

import hashlib
import re

DIMS = 16


def embed(texts: list[str]) -> list[list[float]]:
    vectors = []
    for text in texts:
        vector = [0.0] * DIMS
        for word in re.findall(r"[a-z]+", text.lower()):
            vector[hashlib.sha256(word.encode()).digest()[0] % DIMS] += 1.0
        vectors.append(vector)
    return vectors
