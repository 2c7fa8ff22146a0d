"""Working points of a discriminant: thresholds at fixed background mistag or fixed signal efficiency,
derived on a reference sample and stored in the bundle's ``tagger.yaml``."""

from __future__ import annotations

import numpy as np

MISTAGS = (0.005, 0.01, 0.025, 0.05)
EFFICIENCIES = (0.3, 0.5)


def wp_name(kind: str, value: float) -> str:
    return f"{kind}{100 * value:g}%"


def derive(disc_signal: np.ndarray, disc_background: np.ndarray, mistags=MISTAGS,
           efficiencies=EFFICIENCIES) -> dict[str, float]:
    """``{name: threshold}``; a jet passes when ``discriminant > threshold``."""
    s = np.asarray(disc_signal, dtype=np.float64)
    b = np.asarray(disc_background, dtype=np.float64)
    s, b = s[np.isfinite(s)], b[np.isfinite(b)]
    out = {}
    for m in mistags:
        if len(b):
            out[wp_name("mistag", m)] = float(np.quantile(b, 1 - m))
    for e in efficiencies:
        if len(s):
            out[wp_name("eff", e)] = float(np.quantile(s, 1 - e))
    return out
