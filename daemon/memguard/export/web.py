"""TLS and basic auth for /metrics, from a web config file in the format
Prometheus' exporters share (prometheus/exporter-toolkit, docs/web-configuration.md)::

    tls_server_config:
      cert_file: memguard.crt          # relative to this file
      key_file: memguard.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: ca.crt
      min_version: TLS12               # TLS10..TLS13
    basic_auth_users:
      prometheus: $2y$10$...           # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')

so one file serves memguard and node_exporter alike.  Passwords are
checked with bcrypt (the pyca package), off the event loop: a check costs
tens of milliseconds by design; a pair that passed once is remembered by
its SHA-256, as exporter-toolkit does, so a scrape every few seconds costs
nothing.  Keys the toolkit has that memguard does not use
(``http_server_config``, cipher suites) are refused by name, not ignored.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
from dataclasses import dataclass, field

import yaml

from ..config import ConfigError

_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


@dataclass
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)      # user -> bcrypt hash
    passed: set[bytes] = field(default_factory=set)             # SHA-256 of user:password pairs that matched

    def credentials(self, header: str | None) -> tuple[str, str] | None:
        """(user, password) of an ``Authorization: Basic`` header, or None."""
        if not header or not header.lower().startswith("basic "):
            return None
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return (user, password) if sep else None

    def check(self, user: str, password: str) -> bool:
        """Whether the pair matches; blocking (bcrypt): call it off the loop."""
        import bcrypt
        hashed = self.users.get(user)
        if hashed is None:
            return False
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        if key in self.passed:
            return True
        ok = bcrypt.checkpw(password.encode(), hashed)
        if ok:
            self.passed.add(key)
        return ok


def load_web_config(path: str) -> WebConfig:
    """Read *path*.  Raises ConfigError naming the file and key, or OSError."""
    with open(path, encoding="utf-8") as f:
        try:
            doc = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(path, None, "", f"not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(path, None, "", "expected a mapping")
    for key in doc:
        if key not in ("tls_server_config", "basic_auth_users"):
            raise ConfigError(path, None, key, "not supported by memguard (tls_server_config, basic_auth_users)")
    base = os.path.dirname(os.path.abspath(path))
    web = WebConfig()
    tls = doc.get("tls_server_config")
    if tls is not None:
        web.tls = _tls_context(tls, base, path)
    users = doc.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise ConfigError(path, None, "basic_auth_users", "expected a mapping of user to bcrypt hash")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(path, None, f"basic_auth_users.{user}", "expected a bcrypt hash ($2y$...)")
        web.users[str(user)] = hashed.encode()
    return web


def _tls_context(tls, base: str, path: str) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        raise ConfigError(path, None, "tls_server_config", "expected a mapping")
    for key in tls:
        if key not in _TLS_KEYS:
            raise ConfigError(path, None, f"tls_server_config.{key}",
                              f"not supported by memguard ({', '.join(sorted(_TLS_KEYS))})")
    for key in ("cert_file", "key_file"):
        if not tls.get(key):
            raise ConfigError(path, None, f"tls_server_config.{key}", "required")
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        raise ConfigError(path, None, "tls_server_config.client_auth_type", f"one of {', '.join(_CLIENT_AUTH)}")
    version = tls.get("min_version", "TLS12")
    if version not in _VERSIONS:
        raise ConfigError(path, None, "tls_server_config.min_version", f"one of {', '.join(_VERSIONS)}")
    if auth != "NoClientCert" and not tls.get("client_ca_file"):
        raise ConfigError(path, None, "tls_server_config.client_ca_file", f"required with {auth}")
    files = {key: os.path.join(base, tls[key]) for key in ("cert_file", "key_file", "client_ca_file") if tls.get(key)}
    for key, name in files.items():
        if not os.path.isfile(name):
            raise ConfigError(path, None, f"tls_server_config.{key}", f"{name}: no such file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[version]
    try:
        ctx.load_cert_chain(files["cert_file"], files["key_file"])
        if auth != "NoClientCert":
            ctx.load_verify_locations(files["client_ca_file"])
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(path, None, "tls_server_config", f"cannot load the certificates: {e}") from None
    ctx.verify_mode = _CLIENT_AUTH[auth]
    return ctx
