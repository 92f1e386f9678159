"""The node's TLS material: a certificate made at start (``--tls``) or the user's own
(``--tls-cert``/``--tls-key``/``--tls-ca``), and the one server ``ssl.SSLContext`` every TLS
listener of the node uses.

A generated certificate is signed by a CA made with trustme. With a data directory the CA
is kept in ``DIR/tls/`` (``ca.pem``, ``ca.key``) and reused on the next start, so clients
keep trusting the same file across restarts and both nodes of an active/standby pair on one
directory share it; without one, a new CA is made in a temporary directory each start, removed when the node stops. The
node certificate (``node.pem``, ``node.key`` beside the CA) names ``localhost``,
``127.0.0.1``, ``::1``, the machine's host name and the listen address. Files are written so
that listeners made elsewhere (an HTTP server that wants paths) can use them too.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import tempfile
from dataclasses import dataclass

log = logging.getLogger("mqemu.ha.tls")


class TLSError(Exception):
    """The certificate, key or CA cannot be used; the text says which file and why."""


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """What ``mqemu serve`` was given: ``generate`` (``--tls``) or the user's files."""

    generate: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None

    @property
    def enabled(self) -> bool:
        return self.generate or self.cert_file is not None


@dataclass(frozen=True, slots=True)
class NodeTLS:
    """The node's server context and the files behind it (``ca_file`` is what clients trust;
    None when the user gave a certificate without ``--tls-ca``)."""

    context: ssl.SSLContext
    cert_file: str
    key_file: str
    ca_file: str | None
    temp_dir: str | None = None  # made for this node (no data directory): removed when it stops

    def discard(self) -> None:
        """Remove the temporary directory of generated files, if there is one."""
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context with the certificate chain and key (TLS 1.2+, no client certs)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise TLSError(f"cannot use the certificate {cert_file} with the key {key_file}: {e}") from e
    return context


def load_tls(options: TLSOptions, data_dir: str | None, host: str) -> NodeTLS:
    """The node's TLS material as options say (the user's files, or generated ones)."""
    if options.cert_file is not None:
        if options.key_file is None:
            raise TLSError("--tls-cert needs --tls-key")
        if options.ca_file is not None and not os.path.isfile(options.ca_file):
            raise TLSError(f"--tls-ca {options.ca_file}: no such file")
        context = server_context(options.cert_file, options.key_file)
        return NodeTLS(context, options.cert_file, options.key_file, options.ca_file)
    return generate(data_dir, host)


def _identities(host: str) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    for extra in (socket.gethostname(), host):
        if extra and extra not in names and extra not in ("0.0.0.0", "::"):
            names.append(extra)
    return names


def generate(data_dir: str | None, host: str) -> NodeTLS:
    """A node certificate signed by a CA made (or, in a data directory, kept) with trustme."""
    try:
        import trustme
    except ImportError as e:  # a runtime dependency; only a broken install lacks it
        raise TLSError("--tls needs the trustme package (pip install trustme)") from e
    temp_dir = None
    if data_dir:
        directory = os.path.join(data_dir, "tls")
        os.makedirs(directory, exist_ok=True)
    else:
        directory = temp_dir = tempfile.mkdtemp(prefix="mqemu-tls-")
    ca_file, ca_key = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key")
    if os.path.isfile(ca_file) and os.path.isfile(ca_key):
        with open(ca_file, "rb") as f, open(ca_key, "rb") as k:
            ca = trustme.CA.from_pem(f.read(), k.read())
    else:
        ca = trustme.CA(organization_name="mqemu")
        _write(ca_key, ca.private_key_pem.bytes(), private=True)
        _write(ca_file, ca.cert_pem.bytes())
    names = _identities(host)
    leaf = ca.issue_cert(*names, common_name="mqemu")
    cert_file, key_file = os.path.join(directory, "node.pem"), os.path.join(directory, "node.key")
    _write(key_file, leaf.private_key_pem.bytes(), private=True)
    _write(cert_file, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return NodeTLS(server_context(cert_file, key_file), cert_file, key_file, ca_file, temp_dir)


def _write(path: str, data: bytes, private: bool = False) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
