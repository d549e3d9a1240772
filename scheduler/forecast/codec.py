"""Exact, JSON-able encoding of numpy arrays for forecaster state."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """A JSON-able, exact encoding of an array (dtype, shape, base64 bytes)."""
    a = np.ascontiguousarray(a)
    return {
        "dtype": a.dtype.str,
        "shape": list(a.shape),
        "b64": base64.b64encode(a.tobytes()).decode("ascii"),
    }


def decode_array(d: Mapping[str, Any]) -> np.ndarray:
    """Inverse of `encode_array`."""
    raw = base64.b64decode(d["b64"])
    return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()
