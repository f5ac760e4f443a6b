"""Broker credentials and TLS: read from files or systemd credentials, never from the command line.

* Password: ``mqtt.password_file`` if configured, else the systemd credential
  ``$CREDENTIALS_DIRECTORY/edged-mqtt-password`` (``LoadCredential=`` in the unit), else none. The
  config file itself cannot hold a password (``mqtt.password`` is an unknown key), so a config
  can be shown, diffed and logged without leaking it. The password is never logged.
* TLS: ``[mqtt.tls]`` with ``ca_file`` (default: the system's trust store), an optional client
  certificate ``cert_file`` whose key comes from ``key_file`` or the credential
  ``edged-mqtt-key``; TLS 1.2 or newer; the broker's certificate must match ``mqtt.host``
  (``verify_hostname = false`` turns that off, with a warning in the log at every start).

Problems (missing or unreadable files, bad certificates) are :class:`~edged.config.ConfigError`:
``edged run`` exits with status 2, which the systemd unit does not restart (no crash loop on a
mistake that a restart cannot fix).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import structlog

from edged.config import ConfigError, MqttConfig, TlsConfig

log = structlog.get_logger("edged.security")

PASSWORD_CREDENTIAL = "edged-mqtt-password"
KEY_CREDENTIAL = "edged-mqtt-key"
MAX_SECRET_BYTES = 4096


@dataclass(frozen=True)
class Auth:
    username: str | None
    password: str | None = None
    source: str | None = None  # where the password came from (a path, never the password)

    def __repr__(self) -> str:  # never print the password, even by accident
        return f"Auth(username={self.username!r}, password={'***' if self.password else None}, source={self.source!r})"


def credential(name: str) -> Path | None:
    """A systemd credential file (``LoadCredential=``), if the service was given one."""
    base = os.environ.get("CREDENTIALS_DIRECTORY")
    if not base:
        return None
    p = Path(base) / name
    return p if p.is_file() else None


def _read_secret(path: Path, key: str, source: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(source, [f"{key}: cannot read {path}: {exc.strerror or exc}"]) from None
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(source, [f"{key}: {path} is {len(data)} bytes; a password file holds one line"])
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(source, [f"{key}: {path} is not UTF-8 text"]) from None
    if not text or "\n" in text:
        raise ConfigError(source, [f"{key}: {path} must hold exactly one non-empty line"])
    mode = path.stat().st_mode
    if mode & 0o077:
        log.warning(
            "credential_file_permissions",
            path=str(path),
            mode=oct(mode & 0o777),
            note="readable by group or others; chmod 600 (or use LoadCredential=)",
        )
    return text


def mqtt_auth(cfg: MqttConfig, source: str = "config") -> Auth:
    """Username and password for the broker (see module docstring)."""
    path: Path | None
    if cfg.password_file is not None:
        path, where = Path(cfg.password_file), "mqtt.password_file"
    else:
        cred = credential(PASSWORD_CREDENTIAL)
        path, where = cred, f"credential {PASSWORD_CREDENTIAL}"
    password = _read_secret(path, where, source) if path is not None else None
    if password is not None and cfg.username is None:
        raise ConfigError(source, [f"mqtt.username: required when a password is given ({where})"])
    return Auth(cfg.username, password, str(path) if path is not None else None)


def tls_context(tls: TlsConfig | None, source: str = "config") -> ssl.SSLContext | None:
    """The client TLS context, or None for a plain connection."""
    if tls is None:
        return None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(source, [f"mqtt.tls.ca_file: cannot load {tls.ca_file}: {exc}"]) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = tls.verify_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not tls.verify_hostname:
        log.warning(
            "tls_hostname_verification_disabled",
            note="any certificate signed by the CA is accepted for any host name",
        )
    key = tls.key_file
    if tls.cert_file is not None and key is None:
        cred = credential(KEY_CREDENTIAL)
        key = str(cred) if cred is not None else None
    if tls.cert_file is not None:
        try:
            ctx.load_cert_chain(tls.cert_file, key)
        except (OSError, ssl.SSLError) as exc:
            problem = (
                f"mqtt.tls.cert_file: cannot load the client certificate {tls.cert_file} "
                f"with key {key or '(in the certificate file)'}: {exc}"
            )
            raise ConfigError(source, [problem]) from None
    elif tls.key_file is not None:
        raise ConfigError(source, ["mqtt.tls.key_file: given without mqtt.tls.cert_file"])
    return ctx
