"""The shared load generator (``shared/bench/loadgen.py``) over TLS: every connection it
opens is wrapped in TLS, verifying the broker's certificate with ``--ca FILE`` (host name
``localhost``), and otherwise it runs unchanged.

usage: python3 bench/tls_loadgen.py --ca CA.pem [--loadgen PATH] -- LOADGEN ARGS...

The load generator drives non-blocking sockets with select(); a TLS socket says "not yet"
with SSLWantRead/WriteError, which it is told as BlockingIOError, and a read takes every TLS
record already readable (a select() on the descriptor does not see records OpenSSL holds).
"""

from __future__ import annotations

import argparse
import runpy
import socket
import ssl
import sys


class BenchTLSSocket(ssl.SSLSocket):
    def recv(self, n: int = 1024, flags: int = 0) -> bytes:
        try:
            data = super().recv(n, flags)
        except ssl.SSLWantReadError:
            raise BlockingIOError from None
        if not data or self.gettimeout() != 0.0:
            return data
        chunks, total = [data], len(data)
        while total < n:
            try:
                more = super().recv(n - total, flags)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not more:
                break
            chunks.append(more)
            total += len(more)
        return b"".join(chunks)

    def send(self, data, flags: int = 0) -> int:
        try:
            return super().send(data, flags)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            raise BlockingIOError from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ca", required=True, help="the CA file the broker's certificate is checked with")
    p.add_argument("--loadgen", default="/work/shared/bench/loadgen.py")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    a = p.parse_args()
    context = ssl.create_default_context(cafile=a.ca)
    context.sslsocket_class = BenchTLSSocket
    plain = socket.create_connection

    def create_connection(address, *args, **kwargs):
        return context.wrap_socket(plain(address, *args, **kwargs), server_hostname="localhost")

    socket.create_connection = create_connection  # type: ignore[assignment]
    sys.argv = [a.loadgen, *[x for x in a.rest if x != "--"]]
    runpy.run_path(a.loadgen, run_name="__main__")


if __name__ == "__main__":
    main()
