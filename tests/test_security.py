"""TLS, credentials and the gateway ACL against a real mosquitto (certificates made by the test)."""

from __future__ import annotations

import getpass
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from edged.config import ConfigError, MqttConfig, TlsConfig, load
from edged.mqtt import Publisher
from edged.security import mqtt_auth, tls_context
from edged.spool import Spool
from tests.conftest import (
    REPO,
    Broker,
    Recorder,
    _mosquitto_or_skip,
    free_port,
    sim_config,
    spool_count,
    wait_for,
)
from tests.pki import Pki, make_pki

GW_PASSWORD = "gw-pa55-Zq8!x"
FACTORY_PASSWORD = "factory-pa55-7Kq"


@dataclass
class SecureBroker:
    broker: Broker
    mtls_port: int  # TLS + client certificate required + password
    tls_port: int  # TLS + password (no client certificate)
    pki: Pki


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    """mosquitto with two TLS listeners, a password file and the shipped gateway ACL."""
    _mosquitto_or_skip()
    pki = make_pki(tmp_path / "pki")
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "test-gw", GW_PASSWORD], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "factory", FACTORY_PASSWORD], check=True)
    acl = tmp_path / "acl"
    acl.write_text(
        (REPO / "systemd" / "mosquitto-edged.acl").read_text() + "\nuser factory\ntopic readwrite #\n"
    )
    mtls, tls = free_port(), free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"""user {getpass.getuser()}
per_listener_settings false
allow_anonymous false
password_file {pw}
acl_file {acl}
persistence false
log_dest stderr
log_type error
log_type warning
listener {mtls} 127.0.0.1
cafile {pki.ca}
certfile {pki.server_cert}
keyfile {pki.server_key}
require_certificate true
tls_version tlsv1.2
listener {tls} 127.0.0.1
cafile {pki.ca}
certfile {pki.server_cert}
keyfile {pki.server_key}
tls_version tlsv1.2
""")
    b = Broker(conf, mtls, tmp_path / "mosquitto.log")
    b.start()
    yield SecureBroker(b, mtls, tls, pki)
    b.stop()


def _factory(sb: SecureBroker) -> Recorder:
    return Recorder(
        sb.tls_port, host="localhost", username="factory", password=FACTORY_PASSWORD, ca=sb.pki.ca
    )


def _mqtt_section(port: int, host: str = "localhost", extra: str = "") -> str:
    return f'host = "{host}"\nport = {port}\nreconnect_min_s = 1\nreconnect_max_s = 2\nusername = "test-gw"\n{extra}'


class TestCredentials:
    def test_password_never_comes_from_the_config_file(self, tmp_path: Path) -> None:
        """A config cannot carry a password: ``mqtt.password`` is an unknown key (exit 2)."""
        cfg = sim_config(tmp_path, 1883, mqtt='host = "h"\nusername = "u"\npassword = "secret"')
        with pytest.raises(ConfigError) as exc:
            load(str(cfg))
        assert "mqtt.password: unknown key" in exc.value.problems

    def test_password_file_then_systemd_credential(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The password comes from password_file, else $CREDENTIALS_DIRECTORY/edged-mqtt-password;
        one trailing newline is stripped; the repr never shows it."""
        f = tmp_path / "pw"
        f.write_text("from-file\n")
        f.chmod(0o600)
        assert mqtt_auth(MqttConfig(username="u", password_file=str(f))).password == "from-file"
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / "edged-mqtt-password").write_text("from-credential")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
        auth = mqtt_auth(MqttConfig(username="u"))
        assert auth.password == "from-credential" and "from-credential" not in repr(auth)
        monkeypatch.delenv("CREDENTIALS_DIRECTORY")
        assert mqtt_auth(MqttConfig(username="u")).password is None

    @pytest.mark.parametrize(
        "content, problem",
        [
            (None, "cannot read"),
            ("", "one non-empty line"),
            ("a\nb\n", "one non-empty line"),
            (b"\xff\xfe", "not UTF-8"),
        ],
    )
    def test_bad_password_files_are_config_errors(self, tmp_path: Path, content: Any, problem: str) -> None:
        """A missing, empty, multi-line or binary password file is a config error naming the key."""
        f = tmp_path / "pw"
        if content is not None:
            f.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ConfigError) as exc:
            mqtt_auth(MqttConfig(username="u", password_file=str(f)))
        assert exc.value.problems[0].startswith("mqtt.password_file") and problem in exc.value.problems[0]

    def test_tls_files_that_do_not_load_are_config_errors(self, tmp_path: Path) -> None:
        """An unreadable CA or a certificate without its key is reported with the key path."""
        with pytest.raises(ConfigError, match=r"mqtt\.tls\.ca_file"):
            tls_context(TlsConfig(ca_file=str(tmp_path / "nope.pem")))
        pki = make_pki(tmp_path / "pki")
        with pytest.raises(ConfigError, match=r"mqtt\.tls\.cert_file"):
            tls_context(TlsConfig(ca_file=str(pki.ca), cert_file=str(pki.client_cert)))
        ctx = tls_context(
            TlsConfig(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
        )
        assert ctx is not None and ctx.check_hostname


pytestmark = pytest.mark.broker


class TestAgainstMosquitto:
    def test_tls_client_cert_password_and_acl_end_to_end(
        self, tmp_path: Path, secure_broker: SecureBroker, service_factory: Any
    ) -> None:
        """With the right CA, client certificate and password (as systemd credentials) the service
        publishes and receives labels through the ACL; the password shows up in no log, argv or env."""
        sb = secure_broker
        creds = tmp_path / "creds"
        creds.mkdir(mode=0o700)
        (creds / "edged-mqtt-password").write_text(GW_PASSWORD + "\n")
        (creds / "edged-mqtt-key").write_bytes(sb.pki.client_key.read_bytes())
        for p in creds.iterdir():
            p.chmod(0o400)
        tls = f'\n[mqtt.tls]\nca_file = "{sb.pki.ca}"\ncert_file = "{sb.pki.client_cert}"\n'
        cfg = sim_config(
            tmp_path,
            sb.mtls_port,
            mqtt=_mqtt_section(sb.mtls_port, extra=tls),
            simulator="seed = 3\nlabel_every_s = 0",
        )
        rec = _factory(sb)
        svc = service_factory(cfg)
        svc.env["CREDENTIALS_DIRECTORY"] = str(creds)
        try:
            svc.start()
            assert rec.wait_for(
                lambda m: len([x for x in m if "/prediction/activity" in x[0]]) >= 3, timeout=60
            ), svc.logs()[-5:]
            first = rec.topic("/prediction/activity")[0]
            rec.publish(
                "edged/test-gw/label/activity",
                f'{{"label": "running", "from": {first["ts"] - 1}, "to": {time.time() + 5}}}',
            )
            assert rec.wait_for(
                lambda m: any("/prediction/activity" in t and p["model"]["n_learned"] > 0 for t, p, _ in m),
                timeout=30,
            ), "label did not get through the ACL"
            assert svc.proc is not None
            pid = svc.proc.pid
            assert GW_PASSWORD.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            assert GW_PASSWORD.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
            assert svc.stop() == 0
            assert rec.wait_for(
                lambda m: any(t.endswith("/status") and p["state"] == "offline" for t, p, _ in m)
            )
        finally:
            rec.close()
        assert GW_PASSWORD not in svc.log_path.read_text()
        events = [e.get("event") for e in svc.logs()]
        assert "mqtt_connected" in events and "mqtt_publish_refused" not in events

    def test_gateway_credentials_cannot_leave_their_prefix(self, secure_broker: SecureBroker) -> None:
        """Publishing with the gateway's credentials outside edged/<id>/ is refused (v5 PUBACK 'Not
        authorized') and never delivered; subscribing elsewhere yields nothing."""
        sb = secure_broker
        rec = _factory(sb)
        got: list[str] = []
        acks: dict[int, str] = {}
        rogue = paho.Client(CallbackAPIVersion.VERSION2, client_id="rogue", protocol=paho.MQTTv5)
        rogue.tls_set(
            ca_certs=str(sb.pki.ca), certfile=str(sb.pki.client_cert), keyfile=str(sb.pki.client_key)
        )
        rogue.username_pw_set("test-gw", GW_PASSWORD)
        rogue.on_publish = lambda c, u, mid, rc, p: acks.__setitem__(mid, str(rc))
        rogue.on_message = lambda c, u, m: got.append(m.topic)
        subscribed = threading.Event()
        rogue.on_subscribe = lambda *a: subscribed.set()
        rogue.connect("localhost", sb.mtls_port)
        rogue.loop_start()
        try:
            for t in ("#", "edged/other-gw/label/+", "edged/test-gw/label/+"):
                subscribed.clear()
                rogue.subscribe(t, qos=1)
                assert subscribed.wait(60), f"rogue could not subscribe to {t}"
            mids = {}
            for topic in (
                "edged/other-gw/prediction/activity",
                "plant/line1/cmd",
                "edged/test-gw/label/activity",
                "edged/test-gw/prediction/activity",
            ):
                info = rogue.publish(topic, b'{"x": 1}', qos=1)
                info.wait_for_publish(60)
                assert info.is_published(), topic
                mids[topic] = info.mid
            rec.publish("edged/other-gw/label/activity", b'{"label": "a", "ts": 1}')
            rec.publish("edged/test-gw/label/activity", b'{"label": "b", "ts": 1}')
            # Was a 0.5 s sleep for stray deliveries. Ordering makes it a wait on events instead: the
            # broker handles one client's publishes in order, so once the permitted one (sent last) has
            # arrived, any forbidden one that got through would have arrived before it; likewise our two
            # labels: once the permitted one reached the rogue, the other-gw one would have too.
            assert rec.wait_for(
                lambda m: any(t == "edged/test-gw/prediction/activity" for t, _, _ in m),
                timeout=30,
                what="the rogue's permitted publication",
            )
            wait_for(
                lambda: list(got),
                30,
                "the rogue to receive its own label topic",
                lambda g: "edged/test-gw/label/activity" in g,
            )
            seen = {t for t, _, _ in rec.messages}
            assert "edged/other-gw/prediction/activity" not in seen and "plant/line1/cmd" not in seen
            for topic in (
                "edged/other-gw/prediction/activity",
                "plant/line1/cmd",
                "edged/test-gw/label/activity",
            ):
                assert acks[mids[topic]] == "Not authorized", (topic, acks)
            assert acks[mids["edged/test-gw/prediction/activity"]] == "Success"
            assert set(got) == {
                "edged/test-gw/label/activity"
            }  # only its own label topic is readable (via # too)
        finally:
            rogue.loop_stop()
            rogue.disconnect()
            rec.close()

    def test_wrong_password_is_refused_clearly_and_the_service_keeps_running(
        self, tmp_path: Path, secure_broker: SecureBroker, service_factory: Any
    ) -> None:
        """Refused credentials: logged with the broker's reason, retried with backoff, the service keeps
        sampling and spooling, and stops cleanly (exit 0) with its messages still on disk."""
        sb = secure_broker
        pw = tmp_path / "wrong-password"
        pw.write_text("not-the-password\n")
        pw.chmod(0o600)
        extra = f'password_file = "{pw}"\n\n[mqtt.tls]\nca_file = "{sb.pki.ca}"\n'
        svc = service_factory(sim_config(tmp_path, sb.tls_port, mqtt=_mqtt_section(sb.tls_port, extra=extra)))
        svc.start()
        refused = svc.wait_log("mqtt_connect_refused", timeout=60, n=2)
        db = tmp_path / "state" / "spool.db"
        wait_for(lambda: spool_count(db), 60, "predictions spooled while refused", lambda n: n > 0)
        assert refused[0]["reason"] in ("Bad user name or password", "Not authorized")
        assert svc.proc is not None and svc.proc.poll() is None
        assert svc.stop() == 0
        assert spool_count(db) > 0
        assert "not-the-password" not in svc.log_path.read_text()

    @pytest.mark.parametrize(
        "host, ca, verify, works, cause",
        [
            ("127.0.0.1", "ca", True, False, "mismatch"),  # certificate is for localhost only
            ("127.0.0.1", "ca", False, True, None),
            ("localhost", "other_ca", True, False, "self-signed certificate in certificate chain"),
            ("localhost", "ca", True, True, None),
        ],
    )
    def test_broker_certificate_is_verified_including_hostname(
        self,
        tmp_path: Path,
        secure_broker: SecureBroker,
        host: str,
        ca: str,
        verify: bool,
        works: bool,
        cause: str | None,
    ) -> None:
        """Hostname verification is on by default; a wrong host or an unknown CA never connects, and the
        log says why."""
        sb = secure_broker
        cfg = MqttConfig(
            host=host,
            port=sb.tls_port,
            username="test-gw",
            reconnect_min_s=1,
            reconnect_max_s=1,
            tls=TlsConfig(ca_file=str(getattr(sb.pki, ca)), verify_hostname=verify),
        )
        spool = Spool(tmp_path / "spool.db")
        pub = Publisher(
            cfg,
            "test-gw",
            lambda s: {"schema": "edged.status.v1", "state": s},
            lambda t, p, o: None,
            spool,
            tls=tls_context(cfg.tls),
            username="test-gw",
            password=GW_PASSWORD,
        )
        with structlog.testing.capture_logs() as logs:
            pub.start()
            # Waits for the outcome itself (connected, or the diagnosed cause of the failure), and
            # fails if neither comes; it used to give up silently after 6 s.
            try:
                wait_for(
                    lambda: (pub.connected, pub.last_error),
                    60,
                    "the TLS connection to succeed or fail with a diagnosed cause",
                    lambda v: v[0] or v[1],
                )
            finally:
                pub.stop(timeout=0.5)
        assert pub.connected is False or works
        if works:
            assert any(e["event"] == "mqtt_connected" for e in logs), logs
        else:
            unreachable = [e for e in logs if e["event"] == "mqtt_unreachable"]
            assert unreachable and "certificate verification failed" in unreachable[0]["cause"]
            assert cause is not None and cause in unreachable[0]["cause"]
