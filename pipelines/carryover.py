"""Kernels for features that carry over to other machines, loads, fault sizes and mountings.

A model trained on one recording transfers only if its features describe the fault rather than
that recording's vibration level or that device's mounting (issue 10):

* **Line-to-background ratio** (:func:`_line_to_background`): the strongest envelope-spectrum bin
  within ``+-tol`` of a defect line over the *median* of the bins around it (the line excluded),
  in dB. A level-free measure of "is there a line here": it does not grow with the overall
  envelope energy, which grows with fault severity and load.
* **Family share** (:func:`_family_lines`): each defect family's strongest-harmonic ratio as a
  share of the sum over the families, "which defect dominates", invariant to how strongly.
* **Shaft-speed search** (:func:`_speed_search`): the induction motor slips a few percent under
  load (CWRU 3 HP: 3.8 % below the nominal speed), which moves the ``h``-th harmonic of a defect
  line ``h`` times as far: at 5.4 x shaft (BPFI) and h = 3 that is several envelope bins. The
  search scales the nominal speed over a grid and keeps the scale at which one defect family's
  harmonics stand out most over their background (summed over channels); the lines are then
  read at that speed. A spectral-peak estimate of the shaft line itself fails here: at 0.17 s
  windows the shaft line is 1 bin wide and often buried.
* **Impulsiveness** (:func:`_impulsiveness`): log kurtosis (Pearson, 3 for a Gaussian) and log
  crest factor, dimensionless; the log compresses their growth with severity.
* **Gravity-aligned motion** (:func:`_gravity_aligned`): the vertical and horizontal parts of the
  linear acceleration (and of the rotation rate) from the Madgwick fusion's gravity estimate,
  plus vector magnitudes: none depends on how the device is held or mounted.

Kernels follow :mod:`pipelines.features`: ``@njit(**JIT)``, arrays in and out, no allocation
except numba's median of a slice of the caller's scratch buffer. ``tests/naive.py`` holds the
numpy references (``tests/test_carryover.py`` compares at rtol 1e-9).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipelines.jit import JIT

_TINY = 1e-30  # keeps a ratio of two empty (all-zero) spectra finite: 0 dB

GRAVITY_ALIGNED = (
    "acc_mag_mean",
    "acc_mag_std",
    "vert_mean",
    "vert_std",
    "horiz_mean",
    "horiz_std",
)
GRAVITY_ALIGNED_GYRO = (
    "gyro_mag_mean",
    "gyro_mag_std",
    "gyro_vert_mean",
    "gyro_vert_std",
    "gyro_horiz_mean",
    "gyro_horiz_std",
)


@njit(**JIT)
def _line_to_background(
    psd: np.ndarray, df: float, f: float, tol_hz: float, gap_hz: float, bg_hz: float, scratch: np.ndarray
) -> float:  # pragma: no cover - compiled
    """Line-to-background ratio (dB) of a one-sided power spectrum at ``f`` Hz.

    Parameters
    ----------
    psd : float64 (K,)
        power per bin, bin ``k`` at ``k * df`` Hz; DC (bin 0) is never used.
    df : float
        bin width in Hz.
    f, tol_hz, gap_hz, bg_hz : float
        the line at ``f``: the bins with ``|k df - f| <= tol_hz`` (the nearest bin when that is
        none); its background: the bins with ``gap_hz < |k df - f| <= gap_hz + bg_hz`` outside the
        line. ``gap_hz`` keeps the line's own main lobe out of its background: a zero-padded
        spectrum spreads a line over the window's main lobe (Hann: +-2 bins of the unpadded
        window, ``2 rate / N`` Hz).
    scratch : float64 (>= K,)
        work space (overwritten).

    Returns
    -------
    float
        ``10 log10((max line bin + tiny) / (median background bin + tiny))``; NaN when the line
        lies past the last bin or has no background bins.
    """
    n_bins = psd.shape[0]
    k_near = math.floor(f / df + 0.5)
    if f <= 0.0 or k_near > n_bins - 1:
        return math.nan
    reach = gap_hz + bg_hz
    k_lo = max(1, math.floor((f - reach) / df) - 1)
    k_hi = min(n_bins - 1, math.ceil((f + reach) / df) + 1)
    peak = -1.0
    m = 0
    for k in range(k_lo, k_hi + 1):
        d = abs(k * df - f)
        if d <= tol_hz:
            if psd[k] > peak:
                peak = psd[k]
        elif gap_hz < d <= reach:
            scratch[m] = psd[k]
            m += 1
    if peak < 0.0:
        if k_near < 1:
            return math.nan
        peak = psd[k_near]
        # the nearest bin is the line, not background
        m = 0
        for k in range(k_lo, k_hi + 1):
            d = abs(k * df - f)
            if k != k_near and gap_hz < d <= reach:
                scratch[m] = psd[k]
                m += 1
    if m == 0:
        return math.nan
    bg = np.median(scratch[:m])
    return 10.0 * math.log10((peak + _TINY) / (bg + _TINY))


@njit(**JIT)
def _family_lines(
    psd: np.ndarray,
    df: float,
    shaft_hz: float,
    mults: np.ndarray,
    harmonics: int,
    tol_frac: float,
    gap_hz: float,
    bg_frac: float,
    min_bg_hz: float,
    scratch: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Line-to-background ratios of harmonic families, per row of ``psd``.

    Parameters
    ----------
    psd : float64 (C, K)
        envelope power spectra.
    df, shaft_hz : float
        bin width and shaft speed (Hz).
    mults : float64 (M,)
        family fundamentals as multiples of the shaft speed (BPFO, BPFI, ..., 1 for the shaft).
    harmonics : int
        ``H``: harmonics ``h = 1..H`` of each fundamental ``f0 = mults[m] * shaft_hz``.
    tol_frac, gap_hz, bg_frac, min_bg_hz : float
        the ``h``-th line is ``h f0 +- max(tol_frac h f0, df)``; its background the bins from
        ``gap_hz`` to ``gap_hz + max(bg_frac f0, min_bg_hz)`` away (:func:`_line_to_background`).
    scratch : float64 (>= K,)
        work space.
    out : float64 (C, M, H)
        written: the ratio (dB) of every harmonic of every family, NaN past the last bin.
    """
    for c in range(psd.shape[0]):
        for m in range(mults.shape[0]):
            f0 = mults[m] * shaft_hz
            bg = max(bg_frac * f0, min_bg_hz)
            for h in range(harmonics):
                f = (h + 1) * f0
                out[c, m, h] = _line_to_background(psd[c], df, f, max(tol_frac * f, df), gap_hz, bg, scratch)


@njit(**JIT)
def _speed_search(
    psd: np.ndarray,
    df: float,
    nominal_hz: float,
    mults: np.ndarray,
    harmonics: int,
    tol_frac: float,
    gap_hz: float,
    bg_frac: float,
    min_bg_hz: float,
    lo: float,
    hi: float,
    steps: int,
    scratch: np.ndarray,
    lines: np.ndarray,
) -> float:  # pragma: no cover - compiled
    """Shaft speed (Hz) at which one defect family's harmonics stand out most.

    For each scale ``s`` of ``steps`` evenly spaced in ``[lo, hi]`` (``lo`` when ``steps`` is 1),
    the score is the best family's sum over harmonics and rows of its line-to-background ratios
    at shaft speed ``s * nominal_hz`` (:func:`_family_lines`; NaN lines count 0). Returns
    ``s * nominal_hz`` for the first best ``s``.

    Parameters
    ----------
    psd : float64 (C, K)
        envelope power spectra.
    mults : float64 (M,)
        the families searched (multiples of the shaft speed).
    lines : float64 (C, M, H)
        work space (overwritten).
    Others as :func:`_family_lines`.
    """
    best = -math.inf
    best_s = lo
    for i in range(steps):
        s = lo + (hi - lo) * i / (steps - 1) if steps > 1 else lo
        _family_lines(
            psd, df, s * nominal_hz, mults, harmonics, tol_frac, gap_hz, bg_frac, min_bg_hz, scratch, lines
        )
        score = -math.inf
        for m in range(mults.shape[0]):
            acc = 0.0
            for c in range(psd.shape[0]):
                for h in range(harmonics):
                    v = lines[c, m, h]
                    if v == v:
                        acc += v
            if acc > score:
                score = acc
        if score > best:
            best = score
            best_s = s
    return best_s * nominal_hz


@njit(**JIT)
def _family_summary(lines: np.ndarray, n_share: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Per row and family: mean and max over harmonics, then each of the first ``n_share``
    families' share of their positive maxima.

    Parameters
    ----------
    lines : float64 (C, M, H)
        line-to-background ratios (dB) from :func:`_family_lines`; NaN harmonics are skipped.
    n_share : int
        the families whose shares are computed (the defects, not the shaft).
    out : float64 (C, 2 M + n_share)
        written: ``mean_0, max_0, mean_1, max_1, ..., share_0, ..., share_{n_share-1}``;
        mean/max NaN when every harmonic is NaN; shares ``max(max_m, 0) / sum`` (equal shares
        when no family has a positive maximum).
    """
    n_fam = lines.shape[1]
    for c in range(lines.shape[0]):
        for m in range(n_fam):
            s = 0.0
            n = 0
            top = -math.inf
            for h in range(lines.shape[2]):
                v = lines[c, m, h]
                if v == v:
                    s += v
                    n += 1
                    if v > top:
                        top = v
            out[c, 2 * m] = s / n if n > 0 else math.nan
            out[c, 2 * m + 1] = top if n > 0 else math.nan
        tot = 0.0
        for m in range(n_share):
            v = out[c, 2 * m + 1]
            if v == v and v > 0.0:
                tot += v
        for m in range(n_share):
            v = out[c, 2 * m + 1]
            pos = v if (v == v and v > 0.0) else 0.0
            out[c, 2 * n_fam + m] = pos / tot if tot > 0.0 else 1.0 / n_share


@njit(**JIT)
def _impulsiveness(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Natural log of the kurtosis (Pearson: ``m4 / m2^2``, 3 for a Gaussian, >= 1) and of the
    crest factor (``max |x - mean| / std``) of each row.

    Parameters
    ----------
    x : float64 (C, N)
        the rows.
    out : float64 (C, 2)
        written: ``log kurtosis, log crest``; NaN for a constant row.
    """
    n_ch, n = x.shape
    for c in range(n_ch):
        s = 0.0
        for i in range(n):
            s += x[c, i]
        mean = s / n
        m2 = 0.0
        m4 = 0.0
        peak = 0.0
        for i in range(n):
            d = x[c, i] - mean
            d2 = d * d
            m2 += d2
            m4 += d2 * d2
            if abs(d) > peak:
                peak = abs(d)
        m2 /= n
        m4 /= n
        if m2 > 0.0:
            out[c, 0] = math.log(m4 / (m2 * m2))
            out[c, 1] = math.log(peak / math.sqrt(m2))
        else:
            out[c, 0] = math.nan
            out[c, 1] = math.nan


@njit(**JIT)
def _mean_std(v: np.ndarray) -> tuple[float, float]:  # pragma: no cover - compiled
    n = v.shape[0]
    s = 0.0
    for i in range(n):
        s += v[i]
    mean = s / n
    q = 0.0
    for i in range(n):
        d = v[i] - mean
        q += d * d
    return mean, math.sqrt(q / n)


@njit(**JIT)
def _gravity_aligned(
    acc: np.ndarray, lin: np.ndarray, gyro: np.ndarray, work: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Orientation-invariant motion features from the fusion's gravity estimate.

    The Madgwick stage writes the linear acceleration ``lin = acc - g u`` (sensor frame), so
    ``acc - lin`` is gravity and ``u = (acc - lin) / |acc - lin|`` the up direction in the sensor
    frame at each sample, however the device is held. Per sample: ``|acc|``, the vertical part
    ``v = lin . u`` and the horizontal part ``|lin - v u|``; likewise for the rotation rate.

    Parameters
    ----------
    acc, lin : float64 (3, N)
        accelerometer and linear-acceleration rows.
    gyro : float64 (3, N) or (0, N)
        gyroscope rows; empty for an accelerometer alone.
    work : float64 (3, N)
        work space.
    out : float64 (6,) or (12,)
        written: mean and std (population) of ``|acc|``, vertical, horizontal
        (``GRAVITY_ALIGNED``), then the same for the gyroscope (``GRAVITY_ALIGNED_GYRO``) when
        given. A sample whose gravity estimate is zero counts as vertical = horizontal = 0.
    """
    n = acc.shape[1]
    has_gyro = gyro.shape[0] == 3
    for part in range(2 if has_gyro else 1):
        src = lin if part == 0 else gyro
        mag = acc if part == 0 else gyro
        for i in range(n):
            ux = acc[0, i] - lin[0, i]
            uy = acc[1, i] - lin[1, i]
            uz = acc[2, i] - lin[2, i]
            un = math.sqrt(ux * ux + uy * uy + uz * uz)
            work[0, i] = math.sqrt(mag[0, i] ** 2 + mag[1, i] ** 2 + mag[2, i] ** 2)
            if un > 0.0:
                ux /= un
                uy /= un
                uz /= un
                v = src[0, i] * ux + src[1, i] * uy + src[2, i] * uz
                hx = src[0, i] - v * ux
                hy = src[1, i] - v * uy
                hz = src[2, i] - v * uz
                work[1, i] = v
                work[2, i] = math.sqrt(hx * hx + hy * hy + hz * hz)
            else:
                work[1, i] = 0.0
                work[2, i] = 0.0
        for r in range(3):
            mean, std = _mean_std(work[r])
            out[6 * part + 2 * r] = mean
            out[6 * part + 2 * r + 1] = std


@njit(**JIT)
def _dominance(lines: np.ndarray, families: int, tau_db: float, out: np.ndarray) -> None:  # pragma: no cover
    """Which defect family dominates, and how strongly: a softmax of the fundamentals' ratios.

    Only the fundamentals are used: higher harmonics of one family fall on another's (CWRU's
    bearing: 3 x BPFO = 10.75 x shaft, 2 x BPFI = 10.83 x shaft), so they would give an
    outer-race fault inner-race evidence and the other way round.

    Parameters
    ----------
    lines : float64 (C, M, H)
        line-to-background ratios (dB) from :func:`_family_lines`; NaN counts as 0 dB (no line).
    families : int
        the first ``families`` families compete (the defects; not FTF or the shaft).
    tau_db : float
        softmax temperature: a family ``tau_db`` dB above another holds ``e`` times its share.
    out : float64 (C, families + 1)
        written: each family's share ``exp(L_m / tau) / sum exp(L / tau)`` (they add up to 1),
        then the strongest fundamental's ratio in dB.
    """
    for c in range(lines.shape[0]):
        top = -math.inf
        for m in range(families):
            v = lines[c, m, 0]
            v = v if v == v else 0.0
            if v > top:
                top = v
        tot = 0.0
        for m in range(families):
            v = lines[c, m, 0]
            v = v if v == v else 0.0
            e = math.exp((v - top) / tau_db)
            out[c, m] = e
            tot += e
        for m in range(families):
            out[c, m] /= tot
        out[c, families] = top
