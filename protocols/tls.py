"""TLS under any listener: ``tls_opener(context)`` is a ``transport.Opener`` that wraps the
accepted socket in a ``trio.SSLStream`` and completes the handshake before the session is
made, so the session reads the same plain byte stream as over TCP.

The stream is ``https_compatible``: a client that hangs up without a TLS close_notify is an
end of stream, as a TCP FIN is, not an error. A failed handshake (plain bytes on the TLS
port, a client that does not trust the certificate) raises ``HandshakeFailed`` with the TLS
library's reason; the transport logs it in one line and closes that socket only.
After the handshake the transport gives the session the verified client certificate's
common name (``certificate_name``), the user of an EXTERNAL login.
"""

from __future__ import annotations

import ssl

import trio

from .transport import HandshakeFailed, MakeSession, Opener

__all__ = ["tls_opener", "handshake", "certificate_name"]


def certificate_name(stream: trio.SSLStream) -> str | None:
    """The common name (CN) of the client's certificate, when the handshake verified one
    (a listener with ``--tls-verify-clients``); None otherwise. The session gets it as
    ``tls_cn`` for the EXTERNAL login (RabbitMQ's ``ssl_cert_login_from = common_name``)."""
    try:
        cert = stream.getpeercert()
    except (ValueError, AttributeError):
        return None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


async def handshake(stream: trio.abc.Stream, context: ssl.SSLContext) -> trio.SSLStream:
    """Wrap stream in TLS as a server and complete the handshake."""
    tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as e:
        cause = e.__cause__
        if isinstance(cause, ssl.SSLError):
            raise HandshakeFailed(f"TLS: {cause.reason or cause}") from None
        raise HandshakeFailed(f"TLS: {cause or 'the client hung up'}") from None
    return tls


def tls_opener(context: ssl.SSLContext, then: Opener | None = None) -> Opener:
    """An opener that does the TLS handshake, then ``then``'s (a WebSocket's), if given."""

    async def open_tls(stream: trio.abc.Stream, conn_id: int) -> tuple[trio.abc.Stream, MakeSession | None] | None:
        tls = await handshake(stream, context)
        if then is None:
            return tls, None
        return await then(tls, conn_id)

    return open_tls
