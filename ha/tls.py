"""The node's TLS material: a certificate made at start (``--tls``) or the user's own
(``--tls-cert``/``--tls-key``/``--tls-ca``), and the one server ``ssl.SSLContext`` every TLS
listener of the node uses (asking every client for a certificate from the CA with
``--tls-verify-clients``).

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
    # Ask every client for a certificate signed by the CA and refuse one without in the
    # handshake (``--tls-verify-clients``; RabbitMQ's verify_peer + fail_if_no_peer_cert,
    # ActiveMQ's needClientAuth). The CA: the generated one, else ``--tls-ca``.
    verify_clients: bool = False

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
    ca_key_file: str | None = None  # the generated CA's key (``client_certificate`` signs with it)
    verify_clients: bool = False  # the context asks for and verifies a client certificate

    def discard(self) -> None:
        """Remove the temporary directory of generated files, if there is one."""
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def server_context(cert_file: str, key_file: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server context with the certificate chain and key (TLS 1.2+); with ``client_ca``,
    every client must present a certificate that CA signed (else the handshake fails)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise TLSError(f"cannot use the certificate {cert_file} with the key {key_file}: {e}") from e
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as e:
            raise TLSError(f"cannot verify clients with the CA {client_ca}: {e}") from e
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def load_tls(options: TLSOptions, data_dir: str | None, host: str) -> NodeTLS:
    """The node's TLS material as options say (the user's files, or generated ones)."""
    if options.cert_file is not None:
        if options.key_file is None:
            raise TLSError("--tls-cert needs --tls-key")
        if options.ca_file is not None and not os.path.isfile(options.ca_file):
            raise TLSError(f"--tls-ca {options.ca_file}: no such file")
        if options.verify_clients and options.ca_file is None:
            raise TLSError("--tls-verify-clients needs --tls-ca: the CA that signs the clients' certificates")
        context = server_context(options.cert_file, options.key_file,
                                 options.ca_file if options.verify_clients else None)
        return NodeTLS(context, options.cert_file, options.key_file, options.ca_file,
                       verify_clients=options.verify_clients)
    return generate(data_dir, host, options.verify_clients)


def _identities(host: str) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    for extra in (socket.gethostname(), host):
        if extra and extra not in names and extra not in ("0.0.0.0", "::"):
            names.append(extra)
    return names


def generate(data_dir: str | None, host: str, verify_clients: bool = False) -> NodeTLS:
    """A node certificate signed by a CA made (or, in a data directory, kept) with trustme;
    with ``verify_clients`` clients need a certificate from the same CA (``ca.key`` beside
    ``ca.pem`` signs them: ``client_certificate``)."""
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
    return NodeTLS(server_context(cert_file, key_file, ca_file if verify_clients else None), cert_file, key_file,
                   ca_file, temp_dir, ca_key, verify_clients)


def client_certificate(ca_file: str, ca_key_file: str, name: str, directory: str) -> tuple[str, str]:
    """A client certificate for ``name`` (its common name and a DNS name), signed by the CA
    whose files are given (a node's generated ``ca.pem``/``ca.key``), written to
    ``directory/NAME.pem`` and ``NAME.key``; returns the two paths (for
    ``--tls-verify-clients``, and the EXTERNAL mechanism that takes the name from it)."""
    import trustme

    with open(ca_file, "rb") as f, open(ca_key_file, "rb") as k:
        ca = trustme.CA.from_pem(f.read(), k.read())
    leaf = ca.issue_cert(name, common_name=name)
    cert_file, key_file = os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")
    _write(key_file, leaf.private_key_pem.bytes(), private=True)
    _write(cert_file, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return cert_file, key_file


def _write(path: str, data: bytes, private: bool = False) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
