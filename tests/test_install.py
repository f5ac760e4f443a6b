"""scripts/install.sh into a staging root: user, groups, directories, venv, config, key, unit and
the optional password drop-in, then `systemd-analyze verify --root` against the installed layout.

No container here (no docker daemon on the build machine): the script runs for real with
``--root``, which useradd/groupadd and systemd-analyze understand. Only the venv's dependencies
come from the test venv (a ``.pth`` line), so pip installs just edged itself from this checkout,
non-editable, as on a gateway; a full install from the package index is the same pip command
(about 4 minutes on this loaded machine)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "install.sh"


def _need(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("install.sh needs root (useradd --root, chgrp)")
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} is not installed")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty system with only root in its user database and systemd's own units."""
    _need("useradd", "groupadd", "systemd-analyze")
    r = tmp_path_factory.mktemp("root")
    (r / "etc").mkdir()
    (r / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (r / "etc" / "group").write_text("root:x:0:\n")
    (r / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (r / "etc" / "gshadow").write_text("root:*::\n")
    (r / "usr" / "lib" / "systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", r / "usr" / "lib" / "systemd" / "system", symlinks=True)
    python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    venv = r / "opt" / "edged" / "venv"
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    site = next(venv.glob("lib/python3.*/site-packages"))
    (site / "test-deps.pth").write_text(next(p for p in sys.path if p.endswith("site-packages")) + "\n")
    return r


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    env = dict(os.environ, PIP_NO_DEPS="1", PIP_NO_BUILD_ISOLATION="1")
    return subprocess.run(
        ["sh", str(SCRIPT), "--root", str(root), "--python", str(python), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "edged.service"],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
    )


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


class TestInstall:
    def test_install_without_a_broker_login(self, root: Path) -> None:
        """A first install: system user and i2c group, /etc/edged 0750 group edged, a config that
        `edged check` accepts with the state in the unit's StateDirectory, a 0600 state key, the
        unit without any password credential, and `systemd-analyze verify` clean."""
        r = _install(root)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "no broker password: edged connects without a login" in r.stdout
        users = {ln.split(":")[0]: ln.split(":") for ln in (root / "etc" / "passwd").read_text().splitlines()}
        groups = {ln.split(":")[0]: ln.split(":") for ln in (root / "etc" / "group").read_text().splitlines()}
        assert users["edged"][5] == "/var/lib/edged" and users["edged"][6] == "/usr/sbin/nologin"
        assert "i2c" in groups and users["edged"][3] == groups["edged"][2]
        etc = root / "etc" / "edged"
        assert _mode(etc) == 0o750 and str(etc.stat().st_gid) == groups["edged"][2]
        conf = (etc / "config.toml").read_text()
        assert re.search(r'^dir = "/var/lib/edged"', conf, re.MULTILINE)
        assert 'status_file = "/run/edged/status.json"' in conf and _mode(etc / "config.toml") == 0o640
        assert _mode(etc / "state.key") == 0o600
        assert re.fullmatch(r"[0-9a-f]{64}\n", (etc / "state.key").read_text())
        unit = (root / "etc" / "systemd" / "system" / "edged.service").read_text()
        assert unit == (REPO / "systemd" / "edged.service").read_text()
        assert not re.search(r"^LoadCredential=edged-mqtt-password", unit, re.MULTILINE)
        assert not (root / "etc" / "systemd" / "system" / "edged.service.d").exists()
        installed = root / "opt" / "edged" / "venv" / "bin" / "edged"
        check = subprocess.run(
            [str(installed), "check", "-c", str(etc / "config.toml")], capture_output=True, text=True
        )
        assert check.returncode == 0 and "password (none)" in check.stdout, check.stderr
        v = _verify(root)
        assert v.returncode == 0 and v.stdout == "" and v.stderr == "", v.stderr

    def test_reinstall_with_a_password_adds_the_drop_in_and_keeps_config_and_key(
        self, root: Path, tmp_path: Path
    ) -> None:
        """Run again with --mqtt-password-file: the password (0600) and a drop-in that loads it as
        the credential edged-mqtt-password; the edited config and the key are kept; verify clean."""
        etc = root / "etc" / "edged"
        conf = etc / "config.toml"
        conf.write_text(conf.read_text().replace('host = "127.0.0.1"', 'host = "broker.plant.local"'))
        key = (etc / "state.key").read_text()
        pw = tmp_path / "pw"
        pw.write_text("s3cret")
        r = _install(root, "--mqtt-password-file", str(pw))
        assert r.returncode == 0, r.stdout + r.stderr
        assert 'host = "broker.plant.local"' in conf.read_text() and (etc / "state.key").read_text() == key
        assert (etc / "mqtt-password").read_text() == "s3cret" and _mode(etc / "mqtt-password") == 0o600
        drop_in = root / "etc" / "systemd" / "system" / "edged.service.d" / "mqtt-password.conf"
        assert "\nLoadCredential=edged-mqtt-password:/etc/edged/mqtt-password\n" in drop_in.read_text()
        v = _verify(root)
        assert v.returncode == 0 and v.stdout == "" and v.stderr == "", v.stderr
