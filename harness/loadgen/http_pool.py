"""Keep-alive connections for the load generator's HTTP client (harness.loadgen.http): plain TCP
as non-blocking stdlib sockets driven by the gevent loop's io watchers, TLS through gevent's SSL
socket; at most `max_connections` in use per host:port."""

from __future__ import annotations

import socket
from typing import Any

import gevent
import gevent.socket
import gevent.ssl
from gevent.lock import BoundedSemaphore

RECV_BYTES = 65536


class Connection:
    """One keep-alive connection. Plain TCP is a non-blocking stdlib socket driven by io watchers
    of the gevent loop; TLS is a gevent SSL socket."""

    def __init__(self, sock: Any, tls: bool) -> None:
        self.sock, self.tls = sock, tls
        self.hub = gevent.get_hub()
        self._rw = None if tls else self.hub.loop.io(sock.fileno(), 1)
        self._ww = None if tls else self.hub.loop.io(sock.fileno(), 2)
        self.closed = False

    def sendall(self, data: bytes) -> None:
        if self.tls:
            self.sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
                view = view[sent:]
            except BlockingIOError:
                self.hub.wait(self._ww)

    def recv(self) -> bytes:
        """Some bytes, waiting cooperatively for them; b'' when the peer closed."""
        if self.tls:
            return self.sock.recv(RECV_BYTES)
        while True:
            try:
                return self.sock.recv(RECV_BYTES)
            except BlockingIOError:
                self.hub.wait(self._rw)

    def is_stale(self) -> bool:
        """True when an idle pooled connection was closed by the server (or has stray bytes)."""
        if self.tls:
            return False  # its recv would block; an error shows on use instead
        try:
            return self.sock.recv(1, socket.MSG_PEEK) is not None  # b'' (closed) or stray bytes
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for watcher in (self._rw, self._ww):
                if watcher is not None:
                    watcher.stop()
                    watcher.close()
            try:
                self.sock.close()
            except OSError:
                pass


def _tls_context() -> gevent.ssl.SSLContext:
    """Verifying client context whose sockets are cooperative (gevent.ssl.create_default_context
    would give the stdlib's, whose handshake blocks the whole loop)."""
    context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and host name
    context.load_default_certs()
    return context


class Pool:
    """Keep-alive connections to one host:port, at most `max_connections` in use at once."""

    def __init__(self, url_host: str, port: int, tls: bool, connect_timeout_s: float,
                 max_connections: int) -> None:
        self.host, self.port, self.tls = url_host, port, tls
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[Connection] = []
        self._slots = BoundedSemaphore(max_connections)
        self._address: tuple | None = None
        self._ssl_context = _tls_context() if tls else None

    def _connect(self) -> Connection:
        if self._address is None:
            # Resolve once: gevent's resolver costs ~40 ms per new connection on a busy host.
            family, _, _, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
            self._address = (family, address)
        family, address = self._address
        gsock = gevent.socket.socket(family, socket.SOCK_STREAM)
        try:
            gsock.settimeout(self.connect_timeout_s)
            gsock.connect(address)
            # Send small writes at once: Nagle + the server's delayed ACK add tens of ms.
            gsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:  # set exactly when self.tls
                tls_sock = self._ssl_context.wrap_socket(gsock, server_hostname=self.host)
                tls_sock.settimeout(None)
                return Connection(tls_sock, tls=True)
            raw = socket.socket(family, socket.SOCK_STREAM, fileno=gsock.detach())
        except BaseException:
            gsock.close()
            raise
        raw.setblocking(False)
        return Connection(raw, tls=False)

    def acquire(self) -> Connection:
        """An idle live connection, or a new one; blocks while `max_connections` are in use."""
        self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if not conn.is_stale():
                    return conn
                conn.close()
            return self._connect()
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: Connection, reusable: bool) -> None:
        """Give a connection back; one not read to the end of a response must not be reused."""
        if reusable and not conn.closed:
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
