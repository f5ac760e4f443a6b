"""DSP features: every kernel against its numpy/scipy reference, physical checks, invariants.

Tolerances: against the references (tests/naive.py) rtol 1e-9, atol 1e-9 (same maths, different
summation order and FFT); physical checks state their own (window leakage, bin width).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edged.config import ConfigError, parse
from pipelines.dsp import BearingParams, FusionParams, ShaftParams, build_dsp, defect_multiples
from pipelines.features import DEFECTS, MOTION, SPECTRUM, FeatureExtractor
from pipelines.windowing import DERIVED, Windower
from tests.conftest import REPO
from tests.naive import NaiveFeatures

IMU = ("ax", "ay", "az", "gx", "gy", "gz")
CWRU = defect_multiples(9, 0.3126, 1.537)
ALL_SETS = ("stats", "bands", "spectrum", "motion", "velocity", "shaft", "envelope")

SPECS: dict[str, dict[str, Any]] = {
    "activity": {
        "channels": IMU,
        "rate_hz": 1000.0,
        "window": 1000,
        "derived": ("roll", "pitch", "lax", "lay", "laz"),
        "features": ("stats", "bands", "spectrum", "motion"),
        "bands_hz": (0.0, 5, 15, 60, 250, 500),
    },
    "machine_estimated_shaft": {
        "channels": ("ax", "ay", "az"),
        "rate_hz": 1000.0,
        "window": 1024,
        "features": ALL_SETS,
        "bands_hz": (5, 20, 100, 500),
        "shaft_range_hz": (5.0, 40.0),
        "defects": CWRU,
        "harmonics": 3,
    },
    "cwru_fixed_shaft": {
        "channels": ("de", "fe"),
        "rate_hz": 12000.0,
        "window": 2048,
        "features": ("stats", "velocity", "shaft", "envelope"),
        "shaft_hz": 29.93,
        "defects": CWRU,
        "log_bands": False,
        "accel_unit": "g",
    },
}


def _pair(spec: str) -> tuple[FeatureExtractor, NaiveFeatures]:
    kw = dict(SPECS[spec])
    return FeatureExtractor(**kw), NaiveFeatures(**kw)


def _signal(rows: int, n: int, rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = rng.standard_normal((rows, n)) * rng.uniform(0.1, 3.0, (rows, 1)) + rng.uniform(-5, 5, (rows, 1))
    x += np.sin(2 * np.pi * rng.uniform(5, 40, (rows, 1)) * t) * 3.0  # a line for shaft/spectrum
    x[1] += 2.0 * np.exp(-((t % 0.05) / 0.002)) * np.sin(2 * np.pi * 0.3 * rate * t)  # impacts
    return x


class TestAgainstReferences:
    @pytest.mark.parametrize("spec", sorted(SPECS))
    def test_every_feature_matches_numpy_scipy(self, spec: str) -> None:
        """Each named feature equals the numpy/scipy reference (rtol 1e-9, atol 1e-9)."""
        fx, ref = _pair(spec)
        assert list(fx.names) == ref.names
        for seed in range(3):
            win = _signal(fx.rows, fx.window, fx.rate_hz, seed)
            got = dict(zip(fx.names, fx.compute(win).tolist(), strict=True))
            want = ref.compute(win)
            for name in fx.names:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-9, err_msg=name)

    def test_feature_names_are_stable(self) -> None:
        """Names are '<channel>.<feature>' strings in a fixed order (checkpoints fingerprint them)."""
        fx, _ = _pair("machine_estimated_shaft")
        assert fx.names[:2] == ("ax.mean", "ax.std")
        assert "acc.corr_xy" in fx.names and "gyro.corr_xy" not in fx.names  # motion: complete triads only
        assert {"ax.vel_rms", "ay.shaft_2x", "shaft.hz", "az.env_bpfi", "ax.env_mean", "ay.dom_freq"} <= set(
            fx.names
        )
        assert all(re.fullmatch(r"[a-z]+\.[a-z0-9_.]+", n) for n in fx.names)


class TestFFT:
    @pytest.mark.parametrize("p", [1 << k for k in range(13)])
    def test_fft_matches_numpy(self, p: int) -> None:
        """The in-place radix-2^2 FFT equals numpy.fft.fft for every power of two up to 4096 (atol 1e-12 x p)."""
        from pipelines.kernels.fft import _fft_inplace, fft_tables

        rng = np.random.default_rng(p)
        z = rng.standard_normal(p) + 1j * rng.standard_normal(p)
        re, im = z.real.copy(), z.imag.copy()
        _fft_inplace(re, im, *fft_tables(p))
        np.testing.assert_allclose(re + 1j * im, np.fft.fft(z), rtol=0, atol=1e-12 * p)


class TestPhysics:
    def test_velocity_rms_of_a_sine(self) -> None:
        """A 1 m/s^2 sine at 80 Hz has velocity RMS 1000/(2 pi 80 sqrt 2) mm/s (within 1 %); in g, x9.80665."""
        rate, n = 2000.0, 4096
        t = np.arange(n) / rate
        x = np.sin(2 * np.pi * 80.0 * t)[None, :]
        want = 1000.0 / (2 * np.pi * 80.0 * math.sqrt(2))
        v = FeatureExtractor(("a",), rate, n, ("velocity",)).compute(x)[0]
        assert v == pytest.approx(want, rel=0.01)
        vg = FeatureExtractor(("a",), rate, n, ("velocity",), accel_unit="g").compute(x)[0]
        assert vg == pytest.approx(want * 9.80665, rel=0.01)

    def test_velocity_band_is_clipped_to_nyquist(self) -> None:
        """The ISO band 10-1000 Hz at 1 kHz sampling becomes 10-500 Hz; a 5 Hz line is outside it."""
        fx = FeatureExtractor(("a",), 1000.0, 1024, ("velocity",))
        assert fx.feature_set("velocity").band == (10.0, 500.0)
        t = np.arange(1024) / 1000.0
        assert fx.compute(np.sin(2 * np.pi * 5.0 * t)[None, :])[0] < 0.05 * 1000 / (
            2 * np.pi * 5 * math.sqrt(2)
        )

    def test_spectrum_of_a_sine_and_of_noise(self) -> None:
        """A bin-centred sine: dominant frequency exact, amplitude within 0.5 %, low entropy; white noise: high entropy."""
        rate, n = 1024.0, 1024
        t = np.arange(n) / rate
        fx = FeatureExtractor(("a",), rate, n, ("spectrum",))
        f = dict(zip(fx.names, fx.compute((2.5 * np.sin(2 * np.pi * 100.0 * t) + 7)[None, :]), strict=True))
        assert f["a.dom_freq"] == 100.0 and f["a.dom_amp"] == pytest.approx(2.5, rel=0.005)
        assert f["a.centroid"] == pytest.approx(100.0, abs=1.0) and f["a.entropy"] < 0.2
        noise = np.random.default_rng(0).standard_normal((1, n))
        g = dict(zip(fx.names, fx.compute(noise), strict=True))
        assert g["a.entropy"] > 0.85 and 150 < g["a.centroid"] < 350

    def test_shaft_speed_is_estimated_and_its_harmonics_measured(self) -> None:
        """A 23.37 Hz shaft line (plus 2x) is found within a tenth of a bin; 1x and 2x powers beat 3x."""
        rate, n = 1000.0, 2048
        t = np.arange(n) / rate
        x = np.sin(2 * np.pi * 23.37 * t) + 0.5 * np.sin(2 * np.pi * 46.74 * t)
        x = x + 0.05 * np.random.default_rng(1).standard_normal(n)
        fx = FeatureExtractor(("a",), rate, n, ("shaft",), shaft_range_hz=(5.0, 40.0), log_bands=False)
        f = dict(zip(fx.names, fx.compute(x[None, :]), strict=True))
        assert f["shaft.hz"] == pytest.approx(23.37, abs=0.1 * rate / n)
        assert f["a.shaft_1x"] == pytest.approx(0.5, rel=0.05) and f["a.shaft_2x"] == pytest.approx(
            0.125, rel=0.05
        )
        assert f["a.shaft_3x"] < 0.01

    @pytest.mark.parametrize("defect", DEFECTS)
    def test_envelope_finds_the_modulating_defect(self, defect: str) -> None:
        """Resonance bursts repeating at one defect frequency put the most envelope power at that line."""
        rate, n, shaft = 12000.0, 4096, 29.93
        dsp = build_dsp(
            _spec(
                ("de",),
                n,
                ["envelope"],
                shaft=ShaftParams(hz=shaft),
                bearing=BearingParams(
                    balls=9,
                    ball_diameter=0.3126,
                    pitch_diameter=1.537,
                    envelope_band_hz=[2000.0, 5000.0],
                    harmonics=1,
                ),
            ),
            rate,
        )
        t = np.arange(3 * n) / rate
        period = 1.0 / (CWRU[defect] * shaft)
        since = t % period
        x = np.exp(-since / 0.0015) * np.sin(2 * np.pi * 3000.0 * t)
        x += 0.1 * np.random.default_rng(2).standard_normal(t.size)
        f = _last_window(dsp, x[:, None], n)
        lines = {d: f[f"de.env_{d}"] for d in DEFECTS}
        assert max(lines, key=lines.__getitem__) == defect, lines


class TestProperties:
    """Invariants on random finite windows (|x| <= 1e6)."""

    FX = FeatureExtractor(
        ("ax", "ay", "az"),
        1000.0,
        256,
        ("stats", "bands", "spectrum", "motion", "velocity"),
        bands_hz=(0.0, 50.0, 200.0, 500.0),
        log_bands=False,
        velocity_band_hz=(10.0, 500.0),
    )

    @staticmethod
    def _f(x: np.ndarray) -> dict[str, float]:
        return dict(zip(TestProperties.FX.names, TestProperties.FX.compute(x).tolist(), strict=True))

    windows = hnp.arrays(
        np.float64, (3, 256), elements=st.floats(-1e3, 1e3, allow_nan=False, width=64)
    ).filter(lambda x: bool(np.all(x.std(axis=1) > 1e-3)))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
    @given(x=windows, a=st.floats(0.01, 100.0))
    def test_scaling(self, x: np.ndarray, a: float) -> None:
        """x -> a x: levels scale by a, powers by a^2, shape features (skew, kurtosis, crest, entropy, centroid, correlations) stay."""
        f, g = self._f(x), self._f(a * x)
        for name, v in f.items():
            feat = name.split(".", 1)[1]
            if feat in {
                "mean",
                "std",
                "rms",
                "min",
                "max",
                "ptp",
                "vel_rms",
                "dom_amp",
                "sma",
            } or feat.startswith("norm_"):
                want = a * v
            elif feat.startswith("band_"):
                want = a * a * v
            else:
                want = v
            assert g[name] == pytest.approx(want, rel=1e-6, abs=1e-9 * max(1.0, a * a)), name

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
    @given(x=windows, c=st.floats(-1e3, 1e3))
    def test_shifting(self, x: np.ndarray, c: float) -> None:
        """x -> x + c: spread, shape, spectra and velocity do not change; the mean moves by c."""
        f, g = self._f(x), self._f(x + c)
        spread = float(np.abs(x).max()) + abs(c)
        for name, v in f.items():
            if "." not in name or name.startswith("acc."):
                continue  # the vector norm and SMA depend on the offset
            feat = name.split(".", 1)[1]
            if feat in {"mean", "min", "max"}:
                assert g[name] == pytest.approx(v + c, rel=1e-9, abs=1e-9 * spread), name
            elif feat in {
                "std",
                "ptp",
                "skew",
                "kurt",
                "zcr",
                "vel_rms",
                "dom_freq",
                "dom_amp",
                "centroid",
                "entropy",
            } or feat.startswith("band_"):
                assert g[name] == pytest.approx(v, rel=1e-5, abs=1e-6 * spread * spread), name

    @settings(max_examples=30, deadline=None)
    @given(level=st.floats(-1e6, 1e6))
    def test_constant_signal(self, level: float) -> None:
        """A constant window: finite features, no spread, no spectrum, zero correlations."""
        f = self._f(np.full((3, 256), level))
        assert all(math.isfinite(v) for v in f.values())
        for ch in ("ax", "ay", "az"):
            assert f[f"{ch}.std"] == 0 and f[f"{ch}.skew"] == 0 and f[f"{ch}.kurt"] == 0
            assert all(f[f"{ch}.{s}"] == 0 for s in SPECTRUM)
            assert f[f"{ch}.vel_rms"] <= 1e-9 * max(1.0, abs(level))
        assert all(f[f"acc.{m}"] == 0 for m in MOTION if m.startswith("corr"))

    ALL = FeatureExtractor(
        ("ax", "ay", "az"),
        1000.0,
        256,
        ALL_SETS,
        bands_hz=(0.0, 100.0, 500.0),
        shaft_range_hz=(5.0, 60.0),
        defects=CWRU,
    )
    sensor_like = st.one_of(st.just(0.0), st.floats(1e-6, 1e6), st.floats(-1e6, -1e-6))

    @settings(max_examples=40, deadline=None)
    @given(x=hnp.arrays(np.float64, (3, 256), elements=sensor_like))
    def test_never_nan(self, x: np.ndarray) -> None:
        """Any window of sensor-like values (0 or 1e-6 <= |x| <= 1e6), spiky or flat, gives finite
        features (all sets, envelope included)."""
        win = np.concatenate([x, x[::-1]])  # band-passed rows: any finite data
        assert np.isfinite(self.ALL.compute(win)).all()

    @settings(max_examples=40, deadline=None)
    @given(x=hnp.arrays(np.float64, (3, 256), elements=st.floats(allow_nan=False, allow_infinity=False)))
    def test_any_finite_input_never_raises_or_gives_inf(self, x: np.ndarray) -> None:
        """Even extreme finite values (denormals, 1e308) never raise and never give +-inf: an
        overflowing feature is NaN, i.e. absent for the learner."""
        out = self.ALL.compute(np.concatenate([x, x]))
        assert not np.isinf(out).any()


def _spec(channels: tuple[str, ...], window: int, features: list[str], **kw: Any) -> Any:
    from types import SimpleNamespace

    base = {
        "channels": list(channels),
        "window": window,
        "features": features,
        "bands_hz": [],
        "log_bands": True,
        "accel_unit": "m/s2",
        "velocity_band_hz": [10.0, 1000.0],
        "fusion": None,
        "shaft": None,
        "bearing": None,
    }
    base.update(kw)
    return SimpleNamespace(**base)


def _last_window(dsp: Any, x: np.ndarray, window: int) -> dict[str, float]:
    """Stream ``x`` (n, channels) through a Windower with the DSP's stream stage; features of the last window."""
    n_raw = len(dsp.extractor.channels)
    w = Windower(dsp.extractor.rows, window, window // 2, derive=dsp.stream)
    cols = list(range(n_raw)) + [DERIVED] * (dsp.extractor.rows - n_raw)
    t = np.arange(x.shape[0], dtype=float)
    wins = list(w.push(t, x, cols))
    return dict(zip(dsp.extractor.names, dsp.extractor.compute(wins[-1].data).tolist(), strict=True))


class TestSpecs:
    def test_invalid_specs_say_why(self) -> None:
        """Inconsistent feature specs are rejected with a reason naming what to change."""
        with pytest.raises(ValueError, match="vector triad"):
            FeatureExtractor(("de", "fe"), 12000.0, 1024, ("motion",))
        with pytest.raises(ValueError, match="fewer than two"):
            FeatureExtractor(("a",), 100.0, 16, ("velocity",), velocity_band_hz=(10.0, 12.0))
        with pytest.raises(ValueError, match="range_hz"):
            FeatureExtractor(("a",), 1000.0, 1024, ("shaft",))
        with pytest.raises(ValueError, match="defect"):
            FeatureExtractor(("a",), 1000.0, 1024, ("envelope",), shaft_hz=25.0)
        with pytest.raises(ValueError, match="IMU channels"):
            build_dsp(_spec(("ax", "ay", "az"), 256, ["stats"], fusion=FusionParams()), 100.0)
        with pytest.raises(ValueError, match="magnetometer"):
            build_dsp(_spec(IMU, 256, ["stats"], fusion=FusionParams(outputs=["yaw"])), 100.0)
        with pytest.raises(ValueError, match=r"\[bearing\]"):
            build_dsp(_spec(("a",), 256, ["envelope"], shaft=ShaftParams(hz=20.0)), 1000.0)
        with pytest.raises(ValueError, match="Nyquist"):
            build_dsp(
                _spec(
                    ("a",),
                    256,
                    ["envelope"],
                    shaft=ShaftParams(hz=20.0),
                    bearing=BearingParams(
                        balls=9, ball_diameter=1, pitch_diameter=5, envelope_band_hz=[100.0, 600.0]
                    ),
                ),
                1000.0,
            )

    def test_cwru_table_from_geometry(self) -> None:
        """SKF 6205 geometry gives CWRU's published multiples (their BSF is 2 x the ball spin)."""
        m = defect_multiples(9, 0.3126, 1.537)
        assert m["bpfi"] == pytest.approx(5.4152, abs=1e-4) and m["bpfo"] == pytest.approx(3.5848, abs=1e-4)
        assert m["ftf"] == pytest.approx(0.39828, abs=5e-5) and 2 * m["bsf"] == pytest.approx(
            4.7135, abs=1e-4
        )


class TestConfig:
    def _raw(self, **task: Any) -> dict[str, Any]:
        base = {"channels": list(IMU), "window": 256, "hop": 128, "bands_hz": [0.5, 5, 50]}
        base.update(task)
        return {
            "device": {"id": "d"},
            "state": {"dir": "/tmp/x"},
            "simulator": {"label_tasks": {"state": "t"}},
            "sensors": {"imu": {"driver": "sim_imu", "rate_hz": 500}},
            "tasks": {"t": base},
        }

    def test_dsp_keys_parse_and_build(self) -> None:
        """fusion, shaft, bearing and the new feature sets are config keys; the task builds."""
        from edged.app import build_tasks

        raw = self._raw(
            features=["stats", "spectrum", "motion", "velocity", "shaft", "envelope"],
            fusion={"beta": 0.05},
            shaft={"range_hz": [5, 40]},
            context_rate_s=60.0,
            bearing={
                "balls": 9,
                "ball_diameter": 0.3126,
                "pitch_diameter": 1.537,
                "envelope_band_hz": [100, 240],
            },
        )
        cfg = parse(raw)
        task = build_tasks(cfg)["t"]
        assert {"roll.mean", "lin.norm_std", "ax.vel_rms", "shaft.hz", "az.env_bpfo"} <= set(task.names)

    @pytest.mark.parametrize(
        "task, where",
        [
            ({"features": ["envelope"], "shaft": {"hz": 20.0}}, r"tasks\.t: .*\[bearing\]"),
            ({"shaft": {"hz": 20.0, "range_hz": [5, 40]}}, r"tasks\.t\.shaft: .*exactly one"),
            ({"fusion": {"outputs": ["heading"]}}, r"tasks\.t\.fusion\.outputs\[0\]"),
            ({"features": ["velocity"], "velocity_band_hz": [10]}, r"tasks\.t\.velocity_band_hz"),
            (
                {
                    "bearing": {
                        "balls": 9,
                        "ball_diameter": 2,
                        "pitch_diameter": 1,
                        "envelope_band_hz": [1, 2],
                    }
                },
                r"tasks\.t\.bearing: .*smaller",
            ),
        ],
    )
    def test_bad_dsp_config_names_the_key(self, task: dict[str, Any], where: str) -> None:
        """A bad DSP table is a config error at its key path."""
        with pytest.raises(ConfigError) as exc:
            parse(self._raw(**task))
        assert any(re.search(where, p) for p in exc.value.problems), exc.value.problems

    def test_fingerprint_unchanged_for_configs_without_the_new_keys(self) -> None:
        """Checkpoints of configs that do not use the new keys keep loading (same fingerprint)."""
        import hashlib
        import json

        from edged.lineage import fingerprint

        cfg = parse(self._raw())
        t = cfg.tasks["t"]
        before = {  # the layout identity as the first release computed it
            "channels": t.channels,
            "context": t.context,
            "window": t.window,
            "features": t.features,
            "bands_hz": t.bands_hz,
            "log_bands": t.log_bands,
            "rate_hz": 500.0,
            "classifier": t.classifier.model_dump(),
            "anomaly": None,
        }
        assert (
            fingerprint(t, 500.0)
            == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
        )
        with_fusion = parse(self._raw(fusion={}))
        assert fingerprint(with_fusion.tasks["t"], 500.0) != fingerprint(cfg.tasks["t"], 500.0)


def test_jit_flags_come_from_one_constant() -> None:
    """No module hard-codes numba flags: every @njit/@jit uses **JIT from pipelines/jit.py."""
    offenders = []
    for path in sorted(
        p for d in ("edged", "drivers", "pipelines", "bench") for p in (REPO / d).rglob("*.py")
    ):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(
                r"\b(fastmath|cache|nogil|parallel|boundscheck|error_model)=(?!=)", code
            ) or re.search(
                r"^\s*@(numba\.)?(n?jit|vectorize|guvectorize|cfunc|stencil)\b(?!\(\*\*JIT\))", code
            ):
                offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, "numba flags must come from pipelines.jit.JIT:\n" + "\n".join(offenders)
    assert Path(REPO / "pipelines" / "jit.py").read_text().count("JIT = {") == 1


@pytest.fixture(scope="module")
def cwru_windows() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Envelope features, labels and chunk numbers of the excerpt's windows that lie inside one chunk."""
    from drivers.replay import read_recording
    from edged.config import load

    cfg, _ = load(str(REPO / "examples" / "cwru.toml"))
    task = cfg.tasks["maintenance"].model_copy(update={"features": ["envelope"]})
    dsp = build_dsp(task, 12000.0)
    # half-overlapping windows whatever the example's hop: more windows; straddling ones are dropped below
    w = Windower(dsp.extractor.rows, task.window, task.window // 2, derive=dsp.stream)
    cols = [0, 1] + [DERIVED] * (dsp.extractor.rows - 2)
    feats, labels, chunks = [], [], []
    vocab: list[str] = []
    for block in read_recording(REPO / "tests" / "data" / "cwru" / "excerpt.csv.gz"):
        codes, names = block.labels["maintenance"]
        vocab += [v for v in names if v not in vocab]
        lut = np.array([vocab.index(v) for v in names])
        for win in w.push(block.t, block.x, cols, lut[codes]):
            first, last = round(win.t_start * 12000) // 8192, round(win.t_end * 12000) // 8192
            if first == last:  # a window inside one recording chunk (the stream shuffles chunks)
                feats.append(dsp.extractor.compute(win.data).copy())
                labels.append(vocab[win.label])
                chunks.append(first)
    return list(dsp.extractor.names), np.array(feats), np.array(labels), np.array(chunks)


class TestCwruBearings:
    """Real vibration: the CWRU excerpt in tests/data/cwru (12 kHz, SKF 6205, 0.007 in faults)."""

    def test_each_fault_peaks_at_its_defect_frequency(self, cwru_windows: Any) -> None:
        """Inner-race windows have their strongest drive-end envelope line at BPFI, outer-race ones at BPFO
        (>= 90 % of windows); healthy windows are a decade below every fault in every line."""
        names, x, y, _ = cwru_windows
        lines = np.stack([x[:, names.index(f"de.env_{d}")] for d in DEFECTS], 1)
        strongest = np.array(DEFECTS)[np.argmax(lines, 1)]
        assert np.mean(strongest[y == "inner_race"] == "bpfi") >= 0.9
        assert np.mean(strongest[y == "outer_race"] == "bpfo") >= 0.9
        for fault in ("inner_race", "ball", "outer_race"):
            assert np.all(lines[y == "normal"].mean(0) < lines[y == fault].mean(0) - 1.0), fault

    def test_envelope_features_classify_held_out_chunks(self, cwru_windows: Any) -> None:
        """Nearest centroid on the standardised envelope features, fitted on one chunk per class,
        labels the windows of the other chunks with accuracy >= 0.95."""
        _, x, y, chunk = cwru_windows
        classes = sorted(set(y))
        first = {c: chunk[y == c].min() for c in classes}
        train = np.array([chunk[i] == first[y[i]] for i in range(len(y))])
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-12
        z = (x - mu) / sd
        centroids = np.stack([z[train & (y == c)].mean(0) for c in classes])
        pred = np.array(classes)[np.argmin(((z[:, None, :] - centroids[None]) ** 2).sum(-1), 1)]
        assert len(set(y[~train])) == 4 and (~train).sum() > 40
        assert np.mean(pred[~train] == y[~train]) >= 0.95


def test_numba_cache_is_never_the_state_dir(tmp_path: Path) -> None:
    """The CLI decides the JIT cache before numba is first imported: no cache at all unless the
    launcher set NUMBA_CACHE_DIR (the state directory is writable: no place for machine code)."""
    import os
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    cfg.write_text((REPO / "config.toml").read_text().replace('dir = "state"', 'dir = "st"'))
    code = (
        "import sys; from edged.cli import load_config; load_config(sys.argv[1]); import edged.app, edged.replay; "
        "from numba.core import config; from pipelines.jit import JIT; print(config.CACHE_DIR, JIT['cache'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "EDGED_NUMBA_CACHE")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]
    assert not (tmp_path / "st" / "numba-cache").exists()


class TestTaskPipelineDsp:
    def _task(self, **task: Any) -> Any:
        from edged.app import build_tasks

        raw = TestConfig()._raw(**task)
        raw["sensors"]["env"] = {"driver": "sim_env", "rate_hz": 1}
        return build_tasks(parse(raw))["t"]

    def test_fusion_channels_reach_the_features(self) -> None:
        """A task with [fusion] sees roll/pitch/linear acceleration of a tilted, shaken IMU as features."""
        from scipy.spatial.transform import Rotation

        task = self._task(features=["stats"], fusion={"outputs": ["roll", "pitch", "lax"], "beta": 0.02})
        n = 5000
        t = np.arange(n) / 500.0
        g = Rotation.from_euler("ZYX", [0.0, -0.2, 0.35]).inv().apply([0, 0, 9.80665])
        x = np.zeros((n, 6))
        x[:, :3] = g
        x[:, 0] += 0.3 * np.sin(2 * np.pi * 3.0 * t)  # shaken along x
        preds = task.process(t, x, task.bind(IMU), None, lambda v: v, {})
        f = dict(zip(task.names, task._vec.tolist(), strict=True))
        assert len(preds) > 10
        assert f["roll.mean"] == pytest.approx(0.35, abs=0.01) and f["pitch.mean"] == pytest.approx(
            -0.2, abs=0.01
        )
        # beta 0.02: the attitude barely follows a 3 Hz shake (a larger beta lets motion leak into it)
        assert f["lax.std"] == pytest.approx(0.3 / math.sqrt(2), rel=0.1) and abs(f["lax.mean"]) < 0.1

    def test_context_rate_of_change(self) -> None:
        """ctx.<c>.rate is the slope of a slow channel over context_rate_s, aligned to window ends;
        it restarts when time goes back (the next replayed file)."""
        task = self._task(features=["stats"], context=["temperature"], context_rate_s=30.0)
        assert task.names[-2:] == ("ctx.temperature", "ctx.temperature.rate")
        n = 500 * 120
        t = np.arange(n) / 500.0
        x = np.zeros((n, 7))
        x[:, 6] = 20.0 + 0.05 * t  # degC, rising 0.05 degC/s
        rates = []
        for a in range(0, n, 5000):
            task.process(
                t[a : a + 5000], x[a : a + 5000], task.bind((*IMU, "temperature")), None, lambda v: v, {}
            )
            rates.append(task._vec[-1])
        assert (
            rates[-1] == pytest.approx(0.05, rel=1e-6)
            and task._slopes[0].hist[-1][0] - task._slopes[0].hist[0][0] <= 31
        )
        task.reset_stream()
        task.process(t[:1000], x[:1000], task.bind((*IMU, "temperature")), None, lambda v: v, {})
        assert task._slopes[0].hist[0][0] < 1.0
