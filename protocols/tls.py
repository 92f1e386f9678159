"""TLS under any listener: ``tls_opener(context)`` is a ``transport.Opener`` that wraps the
accepted socket in a ``trio.SSLStream`` and completes the handshake before the session is
made, so the session reads the same plain byte stream as over TCP.

The stream is ``https_compatible``: a client that hangs up without a TLS close_notify is an
end of stream, as a TCP FIN is, not an error. A failed handshake (plain bytes on the TLS
port, a client that does not trust the certificate) raises ``HandshakeFailed`` with the TLS
library's reason; the transport logs it in one line and closes that socket only.
After the handshake the transport gives the session the verified client certificate's
subject (``certificate_subject``), which names the user of an EXTERNAL login.
"""

from __future__ import annotations

import ssl

import trio

from .transport import HandshakeFailed, MakeSession, Opener

__all__ = ["tls_opener", "handshake", "certificate_subject"]


def certificate_subject(stream: trio.SSLStream) -> tuple | None:
    """The subject of the client's certificate as the ssl module gives it (a tuple of
    relative distinguished names, each a tuple of (attribute, value)), when the handshake
    verified one (a listener with ``--tls-verify-clients``); None otherwise. The session
    keeps it as ``tls_subject``; ``AuthRegistry.certificate_name`` names its user."""
    try:
        cert = stream.getpeercert()
    except (ValueError, AttributeError):
        return None
    subject = (cert or {}).get("subject")
    return tuple(subject) if subject else None


async def handshake(stream: trio.abc.Stream, context: ssl.SSLContext) -> trio.SSLStream:
    """Wrap stream in TLS as a server and complete the handshake."""
    tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as e:
        cause = e.__cause__
        # A peer that hangs up mid-handshake (a balancer's TCP health check, a port probe)
        # is logged at debug level only; a handshake the peer got wrong stays at info.
        hung_up = cause is None or isinstance(cause, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError))
        if isinstance(cause, ssl.SSLError):
            raise HandshakeFailed(f"TLS: {cause.reason or cause}", hung_up) from None
        raise HandshakeFailed(f"TLS: {cause or 'the client hung up'}", hung_up) from None
    return tls


def tls_opener(context: ssl.SSLContext, then: Opener | None = None) -> Opener:
    """An opener that does the TLS handshake, then ``then``'s (a WebSocket's), if given."""

    async def open_tls(stream: trio.abc.Stream, conn_id: int) -> tuple[trio.abc.Stream, MakeSession | None] | None:
        tls = await handshake(stream, context)
        if then is None:
            return tls, None
        return await then(tls, conn_id)

    return open_tls
