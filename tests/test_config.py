"""Config: the shipped file is valid; every problem is named by its key; unknown keys fail."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

import drivers
import edged.config
from edged.config import AnySensorConfig, ConfigError, load, parse
from tests.conftest import REPO


def _raw() -> dict:
    return tomllib.loads((REPO / "config.toml").read_text())


def _problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse(raw)
    return exc.value.problems


class TestShippedConfig:
    def test_shipped_config_is_valid(self) -> None:
        """config.toml: an emulated IMU chip >= 100 Hz with 6 axes, an emulated env chip ~1 Hz, both
        tasks, local broker."""
        cfg, _ = load(str(REPO / "config.toml"))
        assert cfg.mqtt.host == "127.0.0.1" and cfg.mqtt.port == 1883
        imu = cfg.sensors["imu"]
        assert imu.driver == "mpu6050" and imu.bus == "sim" and imu.rate_hz >= 100
        assert cfg.sensors["env"].driver == "bme280" and cfg.sensors["env"].bus == "sim"
        assert cfg.sensor_channels()["imu"] == ("ax", "ay", "az", "gx", "gy", "gz")
        assert set(cfg.sensor_channels()["env"]) == {"temperature", "humidity", "pressure"}
        assert set(cfg.tasks) == {"activity", "maintenance"}
        assert cfg.tasks["maintenance"].anomaly is not None
        assert Path(cfg.state.dir).is_absolute()

    def test_examples_are_valid(self) -> None:
        """Every shipped example config validates (some read the datasets in ../shared/data)."""
        if not (REPO.parent / "shared" / "data").is_dir():
            pytest.skip("../shared/data is not beside this checkout; the dataset examples point into it")
        for p in sorted((REPO / "examples").glob("*.toml")):
            load(str(p))


class TestErrors:
    def test_unknown_key_is_named(self) -> None:
        """A misspelt key is an error naming it, not silently ignored."""
        raw = _raw()
        raw["mqtt"]["hots"] = "x"
        assert _problems(raw) == ["mqtt.hots: unknown key"]

    def test_wrong_type_and_range_name_key_and_value(self) -> None:
        """Type and range errors give the key path, what was expected and what was found; all at once."""
        raw = _raw()
        raw["mqtt"]["port"] = 70000
        raw["tasks"]["activity"]["window"] = "big"
        raw["sensors"]["imu"]["rate_hz"] = -5
        probs = _problems(raw)
        assert any(p.startswith("mqtt.port:") and "65535" in p and "70000" in p for p in probs)
        assert any(p.startswith("tasks.activity.window:") and "'big'" in p for p in probs)
        assert any(p.startswith("sensors.imu.rate_hz:") and "-5" in p for p in probs)

    def test_missing_required_key(self) -> None:
        """A missing [device] id is named."""
        raw = _raw()
        del raw["device"]["id"]
        assert _problems(raw) == ["device.id: required key is missing"]

    def test_unknown_driver_and_model_are_errors(self) -> None:
        """Drivers and learners come from allow-lists."""
        raw = _raw()
        raw["sensors"]["imu"]["driver"] = "os.system"
        raw["tasks"]["activity"]["classifier"]["model"] = "subprocess"
        probs = _problems(raw)
        assert any(p.startswith("sensors.imu:") and "os.system" in p for p in probs)
        assert any(p.startswith("tasks.activity.classifier:") and "subprocess" in p for p in probs)

    def test_cross_key_problems(self) -> None:
        """Unknown channels, hop > window and bands above Nyquist are named by key."""
        raw = _raw()
        raw["tasks"]["activity"]["channels"] = ["ax", "nope"]
        raw["tasks"]["maintenance"]["hop"] = 5000
        probs = _problems(raw)
        assert any(p.startswith("tasks.activity.channels[1]:") and "nope" in p for p in probs)
        assert any(p.startswith("tasks.maintenance.hop:") and "5000" in p for p in probs)
        raw = _raw()
        raw["tasks"]["activity"]["bands_hz"] = [1, 10, 900]
        assert any("Nyquist" in p for p in _problems(raw))

    def test_device_id_must_be_a_topic_level(self) -> None:
        """The device id becomes a topic level: wildcards and slashes are refused."""
        raw = _raw()
        raw["device"]["id"] = "a/#"
        assert _problems(raw)[0].startswith("device.id:")


class TestSchema:
    def test_sensor_union_lists_every_driver_config(self) -> None:
        """The typed sensor union in edged.config names exactly the configs drivers.CONFIGS registers."""
        assert set(typing.get_args(AnySensorConfig)) == set(drivers.CONFIGS)

    def test_every_config_field_is_described(self) -> None:
        """Every key of edged's own sections carries a description (the configuration reference is
        generated from them)."""
        own = [
            m
            for m in vars(edged.config).values()
            if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == "edged.config"
        ]
        undescribed = [
            f"{m.__name__}.{n}" for m in own for n, f in m.model_fields.items() if not f.description
        ]
        assert not undescribed


class TestCheckCommand:
    def _check(self, path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edged", "check", "-c", str(path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )

    def test_check_ok(self) -> None:
        """`edged check` on the shipped config exits 0."""
        r = self._check(REPO / "config.toml")
        assert r.returncode == 0, r.stderr
        assert "config OK" in r.stdout

    def test_check_bad_exits_2_naming_the_key(self, tmp_path: Path) -> None:
        """`edged check` on a bad config exits 2 and names the offending key."""
        bad = tmp_path / "bad.toml"
        bad.write_text((REPO / "config.toml").read_text().replace("port = 1883", "port = 1883\nprot = 1"))
        r = self._check(bad)
        assert r.returncode == 2
        assert "mqtt.prot: unknown key" in r.stderr

    def test_check_syntax_error_and_missing_file(self, tmp_path: Path) -> None:
        """Broken TOML and a missing file are clear errors, exit 2."""
        bad = tmp_path / "bad.toml"
        bad.write_text("[device\nid = 1")
        r = self._check(bad)
        assert r.returncode == 2 and "not valid TOML" in r.stderr
        r = self._check(tmp_path / "none.toml")
        assert r.returncode == 2 and "cannot read" in r.stderr
