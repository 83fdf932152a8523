"""A client for Dovecot's auth-client socket (what imap-login and pop3-login
speak to the auth process): VERSION, CPID, then AUTH ... PLAIN with the
response inline. One request at a time per connection; use one AuthClient
per thread. Standard library only."""

import base64
import itertools
import os
import socket
import threading
import time

_cpid = itertools.count(os.getpid() * 1000 + 1)
_cpid_lock = threading.Lock()


class AuthError(Exception):
    pass


class AuthClient:
    def __init__(self, socket_path, timeout=120.0):
        self.path = socket_path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(socket_path)
        self.buf = b""
        self.ids = itertools.count(1)
        with _cpid_lock:
            # the auth server refuses two connections with the same CPID
            cpid = next(_cpid) % 4000000000
        self.sock.sendall(f"VERSION\t1\t2\nCPID\t{cpid}\n".encode())
        while True:
            line = self._line()
            if line == "DONE":
                break
            if line.startswith("VERSION\t") and not line.startswith("VERSION\t1\t"):
                raise AuthError(f"unsupported auth protocol: {line}")

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AuthError("auth server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def auth(self, user, password, rip, service="imap", no_penalty=False,
             lip="127.0.0.1", session=True):
        """One PLAIN authentication; returns (ok, reply fields, seconds).
        Each request carries a session id of its own, as imap-login's do
        (Dovecot's %{session}): a policy server pairs allow and report by it.
        session=False sends none, as Postfix's smtpd does (service=smtp)."""
        rid = next(self.ids)
        resp = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
        fields = [f"AUTH\t{rid}\tPLAIN\tservice={service}", f"lip={lip}",
                  f"rip={rip}", f"real_rip={rip}", "lport=143", "rport=50000"]
        if session:
            fields.append("session=" + base64.b64encode(os.urandom(12)).decode())
        fields.append("secured")
        if no_penalty:
            fields.append("no-penalty")
        fields.append("resp=" + resp.decode())
        t0 = time.monotonic()
        self.sock.sendall(("\t".join(fields) + "\n").encode())
        while True:
            line = self._line()
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] == str(rid):
                break
        seconds = time.monotonic() - t0
        if parts[0] == "OK":
            return True, parts[2:], seconds
        if parts[0] == "FAIL":
            return False, parts[2:], seconds
        raise AuthError(f"unexpected reply: {line}")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
