"""cellar_client.py - a small cellar client in Python 3, written from
docs/PROTOCOL.md, docs/TLS.md and docs/SECURITY.md alone (not from the C
sources), as an independent check of the protocol as documented.

The messages come from proto/cellar.proto through protoc's Python output
and Debian's python3-protobuf; framing (a 4-byte little-endian length, then
one encoded message), ids, pipelining and TLS are done here.

    import cellar_client as cc
    c = cc.Client.connect("tcp://127.0.0.1:7070")
    hello = c.ok("hello", version=1, client="py")
    c.ok("mkdir", path="/usr/d", parents=True)
    err = c.fail("stat", path="/usr/nope")    # -> Error (code, message)

The generated module cellar_pb2 must be importable (PYTHONPATH), or
CELLAR_PB2_DIR names a directory to generate it into with protoc.
"""
import os
import socket
import ssl
import struct
import subprocess
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_PROTO = os.path.join(_HERE, "..", "..", "proto")


def _load_pb2():
    try:
        import cellar_pb2  # noqa: F401
    except ImportError:
        out = os.environ.get("CELLAR_PB2_DIR")
        if not out:
            raise
        os.makedirs(out, exist_ok=True)
        subprocess.run(["protoc", "-I" + _PROTO, "--python_out=" + out,
                        os.path.join(_PROTO, "cellar.proto")], check=True)
        sys.path.insert(0, out)
    import cellar_pb2
    return cellar_pb2


pb = _load_pb2()

# docs/PROTOCOL.md section 9, Open
O_READ, O_WRITE, O_CREATE, O_EXCL, O_TRUNC, O_APPEND = 1, 2, 4, 8, 16, 32
MAX_FRAME = 16896  # section 2 (also HelloReply.max_frame)


class CellarError(Exception):
    """A Response with `error` set (section 6)."""

    def __init__(self, op, code, message):
        super().__init__("%s: %s (%d): %s" % (op, code_name(code), code, message))
        self.code, self.message = code, message


def code_name(code):
    try:
        return pb.Code.Name(code)
    except ValueError:
        return "code %d" % code


class Closed(Exception):
    """The device closed the connection."""


class Client:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.next_id = 1
        self.pending = []   # ids sent and not answered, in order (section 5)

    # ---- connecting (section 1, TLS.md) ----------------------------------
    @staticmethod
    def _hostport(url, scheme, default_port):
        rest = url[len(scheme):]
        if rest.startswith("["):
            host, _, port = rest[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = rest.partition(":")
        return host, int(port or default_port)

    @classmethod
    def connect(cls, url, ca=None, cert=None, key=None, timeout=20.0,
                session=None, context=None):
        """tcp://HOST:PORT, or tls://HOST:PORT with the CA the device's
        certificate must chain to and, for mutual authentication, a client
        certificate and key. The TLS stack is Python's ssl (OpenSSL), not
        the device's mbedTLS."""
        if url.startswith("tcp://"):
            host, port = cls._hostport(url, "tcp://", 7070)
            s = socket.create_connection((host, port), timeout=timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return cls(s)
        if url.startswith("tls://"):
            host, port = cls._hostport(url, "tls://", 7443)
            ctx = context or tls_context(ca, cert, key)
            raw = socket.create_connection((host, port), timeout=timeout)
            # an IP address URL: only the chain is checked (TLS.md);
            # session: an ssl.SSLSession to resume (a ticket, TLS.md)
            s = ctx.wrap_socket(raw, server_hostname=None, session=session)
            return cls(s)
        raise ValueError("unsupported URL %r" % url)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- framing (section 2) ---------------------------------------------
    def send_frame(self, body):
        self.sock.sendall(struct.pack("<I", len(body)) + body)

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("connection closed by the device")
            self.buf += chunk

    def recv_frame(self):
        self._fill(4)
        (n,) = struct.unpack_from("<I", self.buf)
        if n == 0 or n > MAX_FRAME:
            raise ValueError("bad frame length %d from the device" % n)
        self._fill(4 + n)
        body = bytes(self.buf[4:4 + n])
        del self.buf[:4 + n]
        return body

    # ---- requests (sections 3, 5) ----------------------------------------
    def build(self, op, rid=None, **fields):
        """A Request with body `op` (a field name of Request: "stat",
        "gc_config", ...) made of `fields`."""
        if rid is None:
            rid = self.next_id
            self.next_id = (self.next_id + 1) & 0xFFFFFFFF or 1
        req = pb.Request(id=rid)
        sub = getattr(req, op)
        sub.CopyFrom(type(sub)(**fields))
        sub.SetInParent()          # an empty body is still a body
        return req

    def send(self, op, **fields):
        """Send one request without waiting; returns its id."""
        req = self.build(op, **fields)
        self.send_frame(req.SerializeToString())
        self.pending.append(req.id)
        return req.id

    def recv(self):
        """The next Response; checks it answers the oldest pending request
        (the device answers strictly in order, section 5)."""
        resp = pb.Response()
        resp.ParseFromString(self.recv_frame())
        if resp.id == 0 and resp.HasField("error"):
            raise CellarError("connection", resp.error.code, resp.error.message)
        want = self.pending.pop(0) if self.pending else None
        if resp.id != want:
            raise ValueError("reply id %d, expected %r" % (resp.id, want))
        return resp

    def call(self, op, **fields):
        self.send(op, **fields)
        return self.recv()

    def ok(self, op, **fields):
        """Call `op`; return the reply body, raise CellarError on an error."""
        resp = self.call(op, **fields)
        if resp.HasField("error"):
            raise CellarError(op, resp.error.code, resp.error.message)
        which = resp.WhichOneof("body")
        return getattr(resp, which) if which else None

    def fail(self, op, **fields):
        """Call `op`, which must fail; return its Error (no body allowed)."""
        resp = self.call(op, **fields)
        if not resp.HasField("error"):
            raise AssertionError("%s succeeded: %s" % (op, resp))
        if resp.WhichOneof("body"):
            raise AssertionError("%s: an error Response with a body" % op)
        return resp.error

    # ---- conveniences ----------------------------------------------------
    def hello(self, client="pyclient"):
        return self.ok("hello", version=1, client=client)

    def write_file(self, path, data, chunk=16384):
        """Open/Write (pipelined, <= 16 in flight)/Close: the file is
        published at Close (section 8)."""
        h = self.ok("open", path=path, flags=O_WRITE | O_CREATE | O_TRUNC).handle
        offs = list(range(0, len(data), chunk))
        inflight = 0
        for o in offs:
            if inflight == 16:
                self._expect_write()
                inflight -= 1
            self.send("write", handle=h, offset=o, data=data[o:o + chunk])
            inflight += 1
        while inflight:
            self._expect_write()
            inflight -= 1
        self.ok("close", handle=h)
        return h

    def _expect_write(self):
        r = self.recv()
        if r.HasField("error"):
            raise CellarError("write", r.error.code, r.error.message)

    def read_file(self, path, chunk=16384):
        o = self.ok("open", path=path, flags=O_READ)
        out = bytearray()
        while True:
            r = self.ok("read", handle=o.handle, offset=len(out), length=chunk)
            out += r.data
            if r.eof or not r.data:
                break
        self.ok("close", handle=o.handle)
        return bytes(out)

    def list_all(self, path):
        names, cursor = {}, 0
        while True:
            r = self.ok("list", path=path, cursor=cursor)
            for e in r.entries:
                names[e.name] = e
            cursor = r.next_cursor
            if cursor == 0:
                return names


class OpensslPsk:
    """A TLS 1.2 ECDHE-PSK connection made by `openssl s_client` (Python's
    ssl has PSK only from 3.13): a socket-like object for Client."""

    def __init__(self, hostport, identity, hexkey,
                 cipher="ECDHE-PSK-CHACHA20-POLY1305"):
        self.p = subprocess.Popen(
            ["openssl", "s_client", "-connect", hostport, "-tls1_2",
             "-psk_identity", identity, "-psk", hexkey, "-cipher", cipher,
             "-quiet", "-no_ign_eof", "-nocommands"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, bufsize=0)

    def sendall(self, b):
        self.p.stdin.write(b)
        self.p.stdin.flush()

    def recv(self, n):
        return os.read(self.p.stdout.fileno(), n)

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.p.stdout.close()
        self.p.stderr.close()


def tls_context(ca, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx
