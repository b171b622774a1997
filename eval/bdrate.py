"""Bjøntegaard delta rate: the mean rate difference (%) of a test curve against an anchor curve at
equal quality, over the quality range both cover.

Each curve's log-rate is interpolated as a function of quality with a monotone piecewise-cubic
(PCHIP) interpolant, the variant JVET's common test conditions adopted over VCEG-M33's single cubic
polynomial, which swings on the long sweeps (19 JPEG points) we compare against. Negative means the
test curve needs fewer bits than the anchor for the same quality.
"""
import numpy as np
from scipy.interpolate import PchipInterpolator


def _log_rate_of_quality(rate, quality):
    rate, quality = np.asarray(rate, float), np.asarray(quality, float)
    order = np.argsort(quality)
    q, r = quality[order], np.log(rate[order])
    keep = np.concatenate([[True], np.diff(q) > 0])  # a sweep may repeat a quality at its ends
    return q[keep], r[keep]


def bd_rate(anchor_rate, anchor_quality, test_rate, test_quality, samples: int = 1000) -> float | None:
    """Percent; None when the curves' quality ranges do not overlap or a curve has < 2 points."""
    qa, ra = _log_rate_of_quality(anchor_rate, anchor_quality)
    qt, rt = _log_rate_of_quality(test_rate, test_quality)
    if len(qa) < 2 or len(qt) < 2:
        return None
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if hi <= lo:
        return None
    grid = np.linspace(lo, hi, samples)
    diff = np.mean(PchipInterpolator(qt, rt)(grid) - PchipInterpolator(qa, ra)(grid))
    return float((np.exp(diff) - 1) * 100)


def bd_rate_of(anchor: dict, test: dict, metric: str = "psnr-rgb") -> float | None:
    """The same, on two curves in CompressAI's results layout."""
    a, t = anchor["results"], test["results"]
    if metric not in a or metric not in t:
        return None
    return bd_rate(a["bpp"], a[metric], t["bpp"], t[metric])
