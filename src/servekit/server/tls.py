"""TLS for the HTTP and gRPC listeners.

``ssl_certfile`` (and ``ssl_keyfile`` unless the certificate file holds the
key) turns TLS on for every port, or for the ports ``ssl_ports`` names by
their settings (``http_port,management_port``); ``ssl_ca_certs`` makes
clients present a certificate that CA signed. The files are read and checked
once, before the workers fork, and a mistake stops the start with a message
naming the file and the setting. Each listener is plain or TLS from its first
connection: nothing is looked at per request.

TorchServe's ``https://`` addresses with no key and certificate get a
self-signed certificate made at start, as TorchServe does
(:func:`self_signed`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servekit.config import TLS_PORT_SETTINGS, ServerSettings
from servekit.errors import ConfigError

log = logging.getLogger("servekit.server")

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----\r?\n?", re.S)
_FLAGS = {"ssl_certfile": "--ssl-certfile", "ssl_keyfile": "--ssl-keyfile", "ssl_ca_certs": "--ssl-ca-certs"}


@dataclass(frozen=True)
class Tls:
    """The checked TLS material: one context for the HTTP listeners, the PEM
    bytes gRPC wants, and the port settings that serve TLS."""

    context: ssl.SSLContext
    chain: bytes
    key: bytes
    ca: bytes | None
    ports: frozenset[str]

    def serves(self, port_setting: str) -> bool:
        return port_setting in self.ports

    def grpc_credentials(self) -> Any:
        import grpc

        return grpc.ssl_server_credentials(
            [(self.key, self.chain)], root_certificates=self.ca, require_client_auth=self.ca is not None
        )


_loaded: dict[tuple[str | None, ...], Tls | None] = {}


def add_grpc_port(server: Any, address: str, settings: ServerSettings, port_setting: str) -> int:
    """Bind a gRPC server's port, with TLS when the settings put that port on TLS."""
    tls = load(settings)
    if tls is not None and tls.serves(port_setting):
        return int(server.add_secure_port(address, tls.grpc_credentials()))
    return int(server.add_insecure_port(address))


def load(settings: ServerSettings) -> Tls | None:
    """The settings' TLS, read and checked once per process (workers inherit
    what the supervisor read); None when TLS is off."""
    key = (settings.ssl_certfile, settings.ssl_keyfile, settings.ssl_ca_certs, settings.ssl_ports)
    if key not in _loaded:
        _loaded[key] = _load(settings)
    return _loaded[key]


def scheme(settings: ServerSettings, port_setting: str) -> str:
    """``https`` or ``http`` for the listener on that port setting."""
    tls = load(settings)
    return "https" if tls is not None and tls.serves(port_setting) else "http"


def _load(settings: ServerSettings) -> Tls | None:
    certfile, keyfile, ca_certs = settings.ssl_certfile, settings.ssl_keyfile, settings.ssl_ca_certs
    if not certfile:
        for name, value in (("ssl_keyfile", keyfile), ("ssl_ca_certs", ca_certs), ("ssl_ports", settings.ssl_ports)):
            if value:
                raise ConfigError(
                    f"{name} is set but ssl_certfile is not; TLS needs a certificate "
                    "(--ssl-certfile, settings.json 'ssl_certfile', SERVEKIT_SSL_CERTFILE)"
                )
        return None
    ports = frozenset(
        TLS_PORT_SETTINGS if settings.ssl_ports is None else [p for p in settings.ssl_ports.split(",") if p]
    )
    cert_pem = _read(certfile, "ssl_certfile")
    chain = _blocks(cert_pem, b"CERTIFICATE")
    if not chain:
        raise ConfigError(_say("ssl_certfile", certfile, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"))
    key_setting, key_path = ("ssl_keyfile", keyfile) if keyfile else ("ssl_certfile", certfile)
    key_pem = _read(keyfile, "ssl_keyfile") if keyfile else cert_pem
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in key_pem or b"Proc-Type: 4,ENCRYPTED" in key_pem:
        raise ConfigError(_say(
            key_setting, key_path,
            "holds an encrypted private key; servekit needs it unencrypted (openssl pkey -in KEY -out PLAIN)",
        ))
    key = _blocks(key_pem, b"PRIVATE KEY")
    if not key:
        what = "holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
        if not keyfile:
            what += "; give the key with ssl_keyfile (--ssl-keyfile)"
        raise ConfigError(_say(key_setting, key_path, what))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_password)
    except (ssl.SSLError, ValueError) as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise ConfigError(
                f"ssl_keyfile {key_path} is not the key of the certificate in ssl_certfile {certfile} "
                f"({_FLAGS['ssl_keyfile']}, {_FLAGS['ssl_certfile']}); give the pair that belongs together"
            ) from None
        raise ConfigError(_say("ssl_certfile", certfile, f"cannot be used with {key_setting} {key_path}: {_reason(exc)}")) from None
    ca: bytes | None = None
    if ca_certs:
        ca_pem = _read(ca_certs, "ssl_ca_certs")
        if not _blocks(ca_pem, b"CERTIFICATE"):
            raise ConfigError(_say("ssl_ca_certs", ca_certs, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"))
        try:
            context.load_verify_locations(cafile=ca_certs)
        except ssl.SSLError as exc:
            raise ConfigError(_say("ssl_ca_certs", ca_certs, f"holds no usable CA certificate: {_reason(exc)}")) from None
        context.verify_mode = ssl.CERT_REQUIRED
        ca = ca_pem
    return Tls(context=context, chain=chain, key=key, ca=ca, ports=ports)


def _no_password() -> bytes:
    # never let OpenSSL prompt on the terminal for an encrypted key's password
    raise ValueError("the private key is encrypted; servekit needs it unencrypted")


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(_say(setting, path, f"cannot be read: {exc.strerror or exc}")) from None


def _blocks(pem: bytes, kind: bytes) -> bytes:
    """The PEM blocks of one kind (``CERTIFICATE``; ``PRIVATE KEY`` matches
    ``RSA PRIVATE KEY`` and ``EC PRIVATE KEY`` too), joined."""
    return b"".join(
        m.group(0).rstrip(b"\r\n") + b"\n" for m in _PEM.finditer(pem) if m.group(1).endswith(kind)
    )


def _say(setting: str, path: str, what: str) -> str:
    return f"{setting} {path} ({_FLAGS[setting]}) {what}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc)


# -- a self-signed certificate, for TorchServe's https:// with no key or certificate --
def self_signed(hosts: list[str]) -> tuple[str, str]:
    """A self-signed certificate and key for ``hosts`` (plus localhost and
    127.0.0.1), written to a private temporary folder removed at exit; their
    paths. Made with the ``cryptography`` package when installed, else the
    ``openssl`` command."""
    folder = Path(tempfile.mkdtemp(prefix="servekit-tls-"))
    import atexit

    atexit.register(shutil.rmtree, folder, True)
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    names = sorted({"localhost", "127.0.0.1", *(h for h in hosts if h and h not in ("0.0.0.0", "::"))})
    try:
        cert_pem, key_pem = _self_signed_cryptography(names)
    except ImportError:
        cert_pem, key_pem = _self_signed_openssl(names, folder)
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    certfile.write_bytes(cert_pem)
    return str(certfile), str(keyfile)


def _self_signed_cryptography(names: list[str]) -> tuple[bytes, bytes]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "servekit self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def _self_signed_openssl(names: list[str], folder: Path) -> tuple[bytes, bytes]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigError(
            "config.properties has https:// addresses but no private_key_file and certificate_file, "
            "and servekit cannot make a self-signed certificate here (neither the cryptography package "
            "nor the openssl command is installed); set private_key_file and certificate_file"
        )
    alt = ",".join(f"IP:{n}" if _is_ip(n) else f"DNS:{n}" for n in names)
    cert, key = folder / "made-cert.pem", folder / "made-key.pem"
    done = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "365", "-subj", "/CN=servekit self-signed",
         "-addext", f"subjectAltName={alt}"],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise ConfigError(
            "config.properties has https:// addresses but no private_key_file and certificate_file, and "
            f"openssl could not make a self-signed certificate ({done.stderr.strip()[:200]}); "
            "set private_key_file and certificate_file"
        )
    try:
        return cert.read_bytes(), key.read_bytes()
    finally:
        for made in (cert, key):
            with contextlib.suppress(OSError):
                made.unlink()


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


__all__ = ["Tls", "add_grpc_port", "load", "scheme", "self_signed"]
