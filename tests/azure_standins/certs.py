"""A throw-away CA and a server certificate for ``localhost`` / ``127.0.0.1``, written as PEM files.

The certificates come from the same code ``thermolog broker init`` uses (``thermolog.broker_init``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from thermolog.broker_init import issue_cert, make_ca


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA certificate, and the server certificate with its key."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a CA and a server certificate valid for ``localhost`` and ``127.0.0.1`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca(days=1)
    cert, key = issue_cert(ca_cert, ca_key, "localhost", days=1, server_names=["localhost", "127.0.0.1"])
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files
