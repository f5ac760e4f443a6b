"""The summary policy: what an aggregate may reveal before it leaves the gateway.

Applied to the payload that :meth:`edged.engine.Engine.summary` builds (count, mean, std, min,
max per channel; prediction counts per class; anomaly-score quantiles), in this order:

1. **Minimum count** (``summary.min_count``): a channel aggregate over fewer samples, or anomaly
   quantiles over fewer windows, is left out and named under ``suppressed``.
2. **Laplace noise** (``[summary.noise]``, optional): samples are clipped to the configured
   ``bounds = [lo, hi]`` *before* aggregation (the engine does that), then the mean and the
   standard deviation each get Laplace noise with half of ``epsilon``. Neighbouring data sets
   differ in the value of one sample (the sample count is public: it follows from the rate and
   the interval, and is published exactly). Sensitivities for n samples in [lo, hi]: mean
   (hi - lo) / n, standard deviation (hi - lo) / sqrt(n) (since |a - b| <= sqrt(|a^2 - b^2|) and
   the population variance moves by at most (hi - lo)^2 / n). min and max have sensitivity
   hi - lo, so noise would drown them: with noise on they are not published. The guarantee is
   epsilon-differential privacy per channel *per summary*; k summaries compose to k x epsilon.
3. **Rounding** (``summary.round_step``): mean, std, min and max are rounded to the channel's
   step (or ``default``), after the noise (post-processing keeps the guarantee).
4. **Pseudonym** (``summary.pseudonymize``): the ``device`` field becomes ``gw-`` + the first 16
   hex digits of HMAC-SHA256(key, device id); stable for a key, not reversible without it. The
   key is ``summary.pseudonym_key_file``, else the credential ``edged-pseudonym-key``, else derived
   from the state key. The topic prefix still names the device: the pseudonym is for summaries
   that are forwarded beyond the plant's broker (bridges, exports) with the topic rewritten.

Summaries never carry raw samples: only the aggregates above, the counters and delivery and
sensor-health figures. No configured identifier other than the device id (pseudonymised on
request) is put into a summary.
"""

from __future__ import annotations

import decimal
import hashlib
import hmac
import math
from pathlib import Path
from typing import Any

import numpy as np

from edged.config import SummaryConfig

PSEUDONYM_CREDENTIAL = "edged-pseudonym-key"
_DOMAIN = b"edged-pseudonym\x00"


def pseudonym(key: bytes, device_id: str) -> str:
    """Keyed hash of a device id (stable, not reversible without the key).

    >>> pseudonym(b"k" * 32, "press-7") == pseudonym(b"k" * 32, "press-7") != pseudonym(b"j" * 32, "press-7")
    True
    """
    return "gw-" + hmac.new(key, _DOMAIN + device_id.encode(), hashlib.sha256).hexdigest()[:16]


def round_to(value: float, step: float) -> float:
    """``value`` rounded to a multiple of ``step``, printed without float noise.

    >>> round_to(9.81234, 0.01), round_to(-3.3333, 0.25), round_to(1234.5, 5)
    (9.81, -3.25, 1235.0)
    """
    digits = max(0, -int(decimal.Decimal(str(step)).as_tuple().exponent))
    return float(round(round(value / step) * step, digits))


def pseudonym_key(cfg: SummaryConfig, state_key: bytes, credentials_dir: str | None) -> bytes:
    """The key for :func:`pseudonym` (see module docstring)."""
    if cfg.pseudonym_key_file is not None:
        return Path(cfg.pseudonym_key_file).read_bytes().strip()
    if credentials_dir:
        p = Path(credentials_dir) / PSEUDONYM_CREDENTIAL
        if p.is_file():
            return p.read_bytes().strip()
    return hmac.new(state_key, b"edged-pseudonym-key", hashlib.sha256).digest()


class SummaryPolicy:
    """Applies the configured policy to summary payloads."""

    def __init__(
        self, cfg: SummaryConfig, key: bytes | None = None, rng: np.random.Generator | None = None
    ) -> None:
        self.cfg = cfg
        self.key = key
        self.rng = (
            rng if rng is not None else np.random.default_rng()
        )  # OS entropy: noise must not be predictable
        if cfg.pseudonymize and not key:
            raise ValueError("pseudonymize needs a key")

    def step(self, channel: str) -> float | None:
        return self.cfg.round_step.get(channel, self.cfg.round_step.get("default"))

    def _noisy(self, ch: str, agg: dict[str, Any]) -> dict[str, Any]:
        assert self.cfg.noise is not None
        lo, hi = self.cfg.noise.bounds[ch]
        n = agg["count"]
        eps = self.cfg.noise.epsilon / 2.0  # one half for the mean, one for the std
        mean = agg["mean"] + self.rng.laplace(0.0, (hi - lo) / n / eps)
        std = agg["std"] + self.rng.laplace(0.0, (hi - lo) / math.sqrt(n) / eps)
        return {
            "count": n,
            "mean": float(np.clip(mean, lo, hi)),
            "std": float(np.clip(std, 0.0, (hi - lo) / 2)),
        }

    def apply(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A sanitised copy of a summary payload."""
        out = dict(payload)
        suppressed: list[str] = []
        channels: dict[str, Any] = {}
        for ch, agg in payload.get("channels", {}).items():
            if agg["count"] < self.cfg.min_count:
                suppressed.append(f"channels.{ch}")
                continue
            agg = self._noisy(ch, agg) if self.cfg.noise is not None else dict(agg)
            step = self.step(ch)
            if step is not None:
                for k in ("mean", "std", "min", "max"):
                    if k in agg:
                        agg[k] = round_to(agg[k], step)
            channels[ch] = agg
        out["channels"] = channels
        tasks = {}
        for name, entry in payload.get("tasks", {}).items():
            entry = dict(entry)
            an = entry.get("anomaly")
            if an is not None and "p50" in an and entry.get("windows", 0) < self.cfg.min_count:
                entry["anomaly"] = {"alarms": an["alarms"]}
                suppressed.append(f"tasks.{name}.anomaly")
            tasks[name] = entry
        out["tasks"] = tasks
        if suppressed:
            out["suppressed"] = {"min_count": self.cfg.min_count, "aggregates": suppressed}
        if self.cfg.noise is not None:
            out["privacy"] = {
                "mechanism": "laplace",
                "epsilon": self.cfg.noise.epsilon,
                "scope": "per channel per summary; mean and std, clipped to bounds",
            }
        if self.cfg.pseudonymize:
            assert self.key is not None
            out["device"] = pseudonym(self.key, payload["device"])
        return out
