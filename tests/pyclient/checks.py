"""checks.py SECTION ARGS... - checks of the protocol features, each written
from the docs (docs/PROTOCOL.md, TLS.md, SECURITY.md, FAT.md) and run
against a cellard that tests/e2e_pyclient.sh started:

  gc URL                       Gc, GcConfig, StatFs pages, FileInfo.id
  pipeline URL                 pipelining, ids, framing errors
  acl TCPURL TLSURL PKI [PSK]  ACL (anonymous reader, writers, admin) + TLS
                               (certificates; a PSK through openssl s_client)
  sd URL CARD                  the SD card at /sd

Prints one line per failure, then "SECTION: N passed, M failed"; exit
status 1 if anything failed.
"""
import hashlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cellar_client as cc  # noqa: E402
from cellar_client import pb, O_READ, O_WRITE, O_CREATE, O_TRUNC  # noqa: E402

E = pb.Code
passed = 0
failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL: " + what, flush=True)
    return cond


def eq(got, want, what):
    return check(got == want, "%s: got %r, want %r" % (what, got, want))


def fails(c, code, op, what=None, has=(), **fields):
    """`op` must fail with `code`; its message must hold every string of
    `has`. Returns the Error."""
    err = c.fail(op, **fields)
    eq(cc.code_name(err.code), cc.code_name(code), "%s: code" % (what or op))
    for h in has:
        check(h in err.message, "%s: %r not in message %r" % (what or op, h, err.message))
    return err


def pages_add_up(s, what):
    """StatFs fields 80-85 (PROTOCOL.md, StatFs)."""
    eq(s.page_size, 256, what + ": page_size")
    n = s.total // s.page_size
    eq(s.pages_free + s.pages_used + s.pages_erased, n,
       what + ": pages_free + pages_used + pages_erased = total / page_size")
    eq(s.pages_free, s.free // s.page_size, what + ": pages_free = free / page_size")
    eq(s.pages_erased, s.reclaimable // s.page_size,
       what + ": pages_erased = reclaimable / page_size")
    eq(s.pages_bad, 0, what + ": pages_bad on a new flash")
    check(s.gc_threshold >= 6, what + ": gc_threshold %d >= 6" % s.gc_threshold)


def snapshot(c):
    """What a denied request must not change: every name, size, id and
    hash under /usr and /bak, and the space figures."""
    out = {}

    def walk(d):
        for name, e in sorted(c.list_all(d).items()):
            p = d.rstrip("/") + "/" + name
            if e.type == pb.DIR:
                out[p] = ("dir", e.id)
                walk(p)
            else:
                out[p] = ("file", e.size, e.id, c.ok("hash", path=p).sha256.hex())
    walk("/usr")
    walk("/bak")
    for part in ("/usr", "/bak"):
        s = c.ok("statfs", path=part)
        out["statfs " + part] = (s.used, s.free, s.reclaimable, s.files, s.dirs, s.gc_threshold)
    out["manifest"] = [(m.path, m.size, m.sha256.hex()) for m in c.ok("manifest", partition="/usr").entries]
    return out


# ---- Gc, GcConfig, StatFs pages, FileInfo.id -------------------------------
def sec_gc(url):
    c = cc.Client.connect(url)
    h = c.hello()
    eq(h.identity, "anonymous", "hello without an ACL: identity")
    eq(h.role, "admin", "hello without an ACL: role")
    eq(list(h.prefixes), [], "hello without an ACL: prefixes")
    kinds = {p.path: p.kind for p in h.partitions}
    eq(kinds, {"/usr": pb.PART_CFS, "/bak": pb.PART_CFS}, "partition kinds")
    bs = h.block_size

    pages_add_up(c.ok("statfs", path="/usr"), "statfs of a new /usr")
    pages_add_up(c.ok("statfs", path="/bak"), "statfs of /bak")

    keep = os.urandom(100000)
    c.write_file("/usr/keep.bin", keep)
    keep_sha = hashlib.sha256(keep).digest()
    keep_id = c.ok("stat", path="/usr/keep.bin").info.id
    check(keep_id != 0, "stat: FileInfo.id is set")

    # garbage: files written then removed (their data becomes stale)
    for i in range(12):
        c.write_file("/usr/junk%d" % i, os.urandom(40000))
    ids = [c.ok("stat", path="/usr/junk%d" % i).info.id for i in range(12)]
    eq(len(set(ids + [keep_id])), 13, "every file has its own id")
    for i in range(12):
        c.ok("remove", path="/usr/junk%d" % i)
    s1 = c.ok("statfs", path="/usr")
    pages_add_up(s1, "statfs after removes")
    check(s1.reclaimable >= 12 * 40000, "removed data is reclaimable: %d" % s1.reclaimable)

    # Gc with blocks: stops once free grew by that many blocks
    g1 = c.ok("gc", partition="/usr", blocks=2)
    check(g1.blocks_swept >= 1, "gc blocks=2: swept %d blocks" % g1.blocks_swept)
    check(g1.free_after >= g1.free_before + 2 * bs,
          "gc blocks=2: free grew by 2 blocks (%d -> %d)" % (g1.free_before, g1.free_after))
    eq(g1.free_before, s1.free, "gc: free_before = StatFs free before")
    check(g1.reclaimed > 0, "gc blocks=2: reclaimed > 0")
    s_mid = c.ok("statfs", path="/usr")
    check(s_mid.reclaimable > bs, "gc blocks=2 left stale data for a full gc")

    # Gc of everything ("" = /usr)
    g2 = c.ok("gc", partition="", blocks=0)
    s2 = c.ok("statfs", path="/usr")
    pages_add_up(s2, "statfs after gc")
    check(g2.reclaimed > 0, "gc: reclaimed %d > 0" % g2.reclaimed)
    check(g2.free_after > g2.free_before, "gc: free grew")
    eq(g2.free_before, s_mid.free, "gc: free_before = StatFs free before")
    eq(g2.free_after, s2.free, "gc: free_after = StatFs free after")
    eq(g2.reclaimable_after, s2.reclaimable, "gc: reclaimable_after = StatFs reclaimable")
    # it stops when what is stale is at most one block or an eighth of the
    # log, and in any case after one pass over the log as it was (in steps
    # of at most 4 blocks)
    pass_blocks = s_mid.used // bs
    check(s2.reclaimable <= max(bs, s2.used // 8) or g2.blocks_swept >= pass_blocks - 1,
          "gc: stopped early: stale left %d, swept %d of %d blocks"
          % (s2.reclaimable, g2.blocks_swept, pass_blocks))
    check(g2.blocks_swept <= pass_blocks + 4,
          "gc: at most one pass: swept %d, the log had %d blocks" % (g2.blocks_swept, pass_blocks))
    check(s2.pages_erased < s1.pages_erased, "gc: fewer erased (stale) pages")
    check(s2.pages_free > s1.pages_free, "gc: more free pages")
    # files and their contents do not change
    eq(c.ok("hash", path="/usr/keep.bin").sha256, keep_sha, "gc: file content unchanged")
    eq(c.ok("stat", path="/usr/keep.bin").info.id, keep_id, "gc: file id unchanged")
    eq(c.read_file("/usr/keep.bin"), keep, "gc: file reads back")
    # a repeated Gc sweeps at most the (now short) log once more
    g3 = c.ok("gc", partition="/usr")
    check(g3.blocks_swept <= s2.used // bs + 4,
          "repeated gc: swept %d, the log has %d blocks" % (g3.blocks_swept, s2.used // bs))
    check(g3.reclaimed <= s2.reclaimable, "repeated gc: reclaimed at most what was stale")
    eq(c.ok("hash", path="/usr/keep.bin").sha256, keep_sha, "repeated gc: file content unchanged")
    # /bak, and errors
    gb = c.ok("gc", partition="/bak")
    check(gb.free_after >= gb.free_before, "gc /bak: free did not shrink")
    fails(c, E.ENOENT, "gc", "gc of /nope", partition="/nope")
    fails(c, E.ENOENT, "gc", "gc of /sd without a card", partition="/sd")

    # GcConfig
    t0 = s2.gc_threshold
    for bad in (0, 1, 5):
        err = fails(c, E.EINVAL, "gc_config", "gc_config threshold %d" % bad,
                    partition="/usr", threshold=bad)
        check(len(err.message) > 0, "gc_config EINVAL has a message")
    fails(c, E.EINVAL, "gc_config", "gc_config threshold 100000", partition="/usr", threshold=100000)
    eq(c.ok("statfs", path="/usr").gc_threshold, t0, "gc_config refused: threshold unchanged")
    r = c.ok("gc_config", partition="/usr", threshold=6)
    eq((r.threshold, r.previous), (6, t0), "gc_config 6: threshold, previous")
    eq(c.ok("statfs", path="/usr").gc_threshold, 6, "statfs gc_threshold after gc_config")
    r = c.ok("gc_config", partition="", threshold=t0 + 1)
    eq((r.threshold, r.previous), (t0 + 1, 6), "gc_config \"\" = /usr")
    rb = c.ok("gc_config", partition="/bak", threshold=6)
    eq(rb.threshold, 6, "gc_config /bak")
    eq(c.ok("statfs", path="/bak").gc_threshold, 6, "statfs /bak gc_threshold")
    fails(c, E.ENOENT, "gc_config", "gc_config /nope", partition="/nope", threshold=8)
    # the most: what the partition leaves above its reserve (found by
    # bisection; the refusals change nothing)
    lo, hi = 6, s2.block_count
    while lo < hi:
        m = (lo + hi + 1) // 2
        r = c.call("gc_config", partition="/usr", threshold=m)
        if r.HasField("error"):
            eq(r.error.code, E.EINVAL, "gc_config %d: EINVAL" % m)
            hi = m - 1
        else:
            lo = m
    tmax = lo
    check(6 < tmax < s2.total // bs, "gc_config: the most (%d) is below the partition's %d blocks"
          % (tmax, s2.total // bs))
    fails(c, E.EINVAL, "gc_config", "gc_config the most + 1", partition="/usr", threshold=tmax + 1)
    eq(c.ok("statfs", path="/usr").gc_threshold, tmax, "the most + 1 refused: threshold unchanged")
    # automatic GC at half the most: free stays above the threshold (plus
    # the reserve, which covers one write) while files are rewritten;
    # without GC, 120 x 20 KB would eat ~600 of the ~740 free blocks
    thr = tmax // 2
    c.ok("gc_config", partition="/usr", threshold=thr)
    least = s2.total
    for i in range(120):
        c.write_file("/usr/churn%d" % (i % 4), os.urandom(20000))
        least = min(least, c.ok("statfs", path="/usr").free // bs)
    check(least >= thr, "automatic gc at threshold %d: free never below it (least %d blocks)"
          % (thr, least))
    c.ok("gc_config", partition="/usr", threshold=t0)

    # FileInfo.id (field 80): kept by Rename, in List too
    c.ok("rename", **{"from": "/usr/keep.bin", "to": "/usr/moved.bin"})
    eq(c.ok("stat", path="/usr/moved.bin").info.id, keep_id, "rename keeps the id")
    eq(c.list_all("/usr")["moved.bin"].id, keep_id, "list: the entry's id")
    c.ok("mkdir", path="/usr/d1/d2", parents=True)
    c.ok("rename", **{"from": "/usr/moved.bin", "to": "/usr/d1/d2/m.bin"})
    eq(c.ok("stat", path="/usr/d1/d2/m.bin").info.id, keep_id, "rename into a directory keeps the id")
    did = c.ok("stat", path="/usr/d1").info.id
    check(did != 0 and did != keep_id, "a directory has its own id")
    # a copy through a shadow file and a rename over the name: a new id
    c.write_file("/usr/d1/d2/m.bin.tmp", b"new content")
    tmp_id = c.ok("stat", path="/usr/d1/d2/m.bin.tmp").info.id
    c.ok("rename", **{"from": "/usr/d1/d2/m.bin.tmp", "to": "/usr/d1/d2/m.bin"})
    eq(c.ok("stat", path="/usr/d1/d2/m.bin").info.id, tmp_id, "rename over a file: the new file's id")
    check(tmp_id != keep_id, "the copy has a new id")
    # every Close of a write handle publishes a new file (a new id); a
    # reader's does not; Truncate by path is a new file too
    ids = [tmp_id]
    h = c.ok("open", path="/usr/d1/d2/m.bin", flags=O_READ).handle
    c.ok("close", handle=h)
    eq(c.ok("stat", path="/usr/d1/d2/m.bin").info.id, tmp_id, "open/close for reading keeps the id")
    h = c.ok("open", path="/usr/d1/d2/m.bin", flags=O_WRITE).handle
    c.ok("write", handle=h, offset=0, data=b"N")
    c.ok("close", handle=h)
    ids.append(c.ok("stat", path="/usr/d1/d2/m.bin").info.id)
    h = c.ok("open", path="/usr/d1/d2/m.bin", flags=O_WRITE).handle
    c.ok("close", handle=h)
    ids.append(c.ok("stat", path="/usr/d1/d2/m.bin").info.id)
    c.ok("truncate", path="/usr/d1/d2/m.bin", size=3)
    ids.append(c.ok("stat", path="/usr/d1/d2/m.bin").info.id)
    eq(len(set(ids)), 4, "write, empty write handle, truncate by path: a new id each (%r)" % ids)
    eq(c.read_file("/usr/d1/d2/m.bin"), b"New", "content after those")
    eq((c.ok("stat", path="/usr").info.id, c.ok("stat", path="/bak").info.id,
        c.ok("stat", path="/").info.id), (1, 1, 0), "ids of /usr, /bak, /")
    c.close()


# ---- pipelining and framing -----------------------------------------------
def doc_bytes(text):
    return bytes.fromhex(text.replace(" ", ""))


def sec_pipeline(url):
    c = cc.Client.connect(url)
    # the byte examples of PROTOCOL.md section 11, as written there
    ping = doc_bytes("08 00 00 00  08 01  5a 04  0a 02 68 69")
    eq(struct.pack("<I", 8) + c.build("ping", rid=1, payload=b"hi").SerializeToString(), ping,
       "section 11: Ping encodes as documented")
    c.sock.sendall(ping)
    c._fill(len(ping))
    eq(bytes(c.buf[:len(ping)]), ping, "section 11: the Ping reply is the same bytes")
    del c.buf[:len(ping)]
    hello = doc_bytes("0a 00 00 00  08 02  52 06  08 01  12 02 70 79")
    eq(struct.pack("<I", 10) + c.build("hello", rid=2, version=1, client="py").SerializeToString(),
       hello, "section 11: Hello encodes as documented")
    stat = doc_bytes("0f 00 00 00  08 07  62 0b  0a 09 2f 75 73 72 2f 6e 6f 70 65")
    c.sock.sendall(stat)
    msg = b'stat "/usr/nope": no such file or directory'
    want = doc_bytes("33 00 00 00  08 07  12 2f  08 02  12 2b") + msg
    c._fill(len(want))
    eq(bytes(c.buf[:len(want)]), want, "section 11: the Stat error reply is the same bytes")
    del c.buf[:len(want)]
    read = doc_bytes("0e 00 00 00  08 03  7a 0a  08 11  10 80 80 01  18 80 80 01")
    eq(struct.pack("<I", 14) + c.build("read", rid=3, handle=17, offset=16384,
                                       length=16384).SerializeToString(),
       read, "section 11: Read encodes as documented")
    c.hello()
    h = c.ok("open", path="/usr/pipe.bin", flags=O_WRITE | O_CREATE | O_TRUNC).handle
    chunks = [os.urandom(1000 + i) for i in range(6)]
    offs = [sum(len(x) for x in chunks[:i]) for i in range(6)]
    # 16 requests of different kinds in one buffer, before reading anything
    reqs = []
    for i in range(6):
        reqs.append(c.build("write", rid=1000 + i * 7, handle=h, offset=offs[i], data=chunks[i]))
    reqs.append(c.build("ping", rid=0xFFFFFFFF, payload=b"last id"))
    reqs.append(c.build("stat", rid=77, path="/usr/nope"))           # an error in the middle
    reqs.append(c.build("sync", rid=78, handle=h))
    reqs.append(c.build("hash", rid=79, path="/usr/pipe.bin"))      # this connection sees its writes
    reqs.append(c.build("statfs", rid=80, path="/usr"))
    reqs.append(c.build("list", rid=81, path="/"))
    reqs.append(c.build("seek", rid=82, handle=h, offset=0, whence=2))
    reqs.append(c.build("close", rid=83, handle=h))
    reqs.append(c.build("stat", rid=84, path="/usr/pipe.bin"))      # published by the Close before it
    reqs.append(c.build("ping", rid=85, payload=b"x" * 64))
    eq(len(reqs), 16, "requests in flight")
    c.sock.sendall(b"".join(struct.pack("<I", len(b)) + b
                            for b in (r.SerializeToString() for r in reqs)))
    c.pending.extend(r.id for r in reqs)
    got = [c.recv() for _ in reqs]       # recv() checks the order of ids
    eq([g.id for g in got], [r.id for r in reqs], "pipelined replies: ids in order")
    data = b"".join(chunks)
    for i in range(6):
        eq((got[i].WhichOneof("body"), got[i].write.offset, got[i].write.written),
           ("write", offs[i], len(chunks[i])), "pipelined write %d" % i)
    eq(got[6].ping.payload, b"last id", "id 0xFFFFFFFF echoed")
    eq(got[7].error.code, E.ENOENT, "stat error in the pipeline")
    check(not got[7].WhichOneof("body"), "error reply has no body")
    eq(got[8].WhichOneof("body"), "done", "sync")
    eq(got[9].hash.sha256, hashlib.sha256(data).digest(), "hash of the pipelined writes")
    eq(got[10].WhichOneof("body"), "statfs", "statfs")
    eq(sorted(e.name for e in got[11].list.entries), ["bak", "usr"], "list /")
    eq(got[12].seek.size, len(data), "seek size")
    eq(got[13].WhichOneof("body"), "done", "close")
    eq(got[14].stat.info.size, len(data), "stat after close")
    eq(got[15].ping.payload, b"x" * 64, "ping")

    # more than max_inflight: safe, answered in order
    n = 40
    for i in range(n):
        c.send("ping", payload=struct.pack("<I", i))
    pays = [c.recv().ping.payload for _ in range(n)]
    eq(pays, [struct.pack("<I", i) for i in range(n)], "40 pipelined pings, in order")

    # a frame split across writes, byte by byte
    body = c.build("ping", rid=4242, payload=b"split").SerializeToString()
    frame = struct.pack("<I", len(body)) + body
    for i in range(len(frame)):
        c.sock.sendall(frame[i:i + 1])
    c.pending.append(4242)
    eq(c.recv().ping.payload, b"split", "a frame sent one byte at a time")

    # errors that keep the connection open (section 3)
    c.send_frame(bytes([0x08, 0x05, 0xfa, 0x3f, 0x00]))   # id 5, field 1023 (unknown), empty
    c.pending.append(5)
    r = c.recv()
    eq(r.error.code, E.EPROTO, "unknown request type: EPROTO")
    check("unknown request type" in r.error.message, "unknown request type message: %r" % r.error.message)
    c.send_frame(bytes([0x08, 0x06]))                       # id 6, no body
    c.pending.append(6)
    r = c.recv()
    eq(r.error.code, E.EPROTO, "no body: EPROTO")
    check("no request body" in r.error.message, "no body message: %r" % r.error.message)
    c.send_frame(bytes([0x08, 0x07, 0x62, 0x10, 0x0a]))    # id 7, truncated stat
    c.pending.append(7)
    r = c.recv()
    eq(r.error.code, E.EPROTO, "malformed request: EPROTO")
    check(r.id in (0, 7), "malformed request: id 7 or 0")
    eq(c.ok("ping", payload=b"alive").payload, b"alive", "connection usable after EPROTO")
    c.close()

    # framing errors: id 0, then the device closes (section 2)
    for length, code in ((0, E.EPROTO), (16897, E.EMSGSIZE), (0xFFFFFFFF, E.EMSGSIZE)):
        c = cc.Client.connect(url)
        c.sock.sendall(struct.pack("<I", length))
        body = c.recv_frame()
        if length == 0xFFFFFFFF:
            doc = b"frame: length 4294967295 is above the limit of 16896 bytes; closing"
            eq(body, doc_bytes("12 47 08 5a 12 43") + doc, "section 11: the bad frame reply")
        resp = pb.Response()
        resp.ParseFromString(body)
        eq((resp.id, resp.error.code), (0, code), "frame length %d" % length)
        closed = False
        try:
            closed = c.sock.recv(1) == b""
        except OSError:
            closed = True
        check(closed, "frame length %d: the device closes" % length)
        c.close()
    # 16896 is accepted as a length (a big Write)
    c = cc.Client.connect(url)
    h = c.ok("open", path="/usr/big", flags=O_WRITE | O_CREATE).handle
    body = c.build("write", rid=9, handle=h, offset=0, data=b"a" * 16384).SerializeToString()
    check(len(body) <= 16896, "a max_chunk write fits in max_frame")
    c.send_frame(body)
    c.pending.append(9)
    eq(c.recv().write.written, 16384, "write of max_chunk")
    err = c.fail("write", handle=h, offset=0, data=b"a" * 16385)
    eq(err.code, E.EMSGSIZE, "write of max_chunk + 1")
    c.ok("close", handle=h)
    c.ok("remove", path="/usr/big")
    c.close()


# ---- access control and TLS -------------------------------------------------
def tls_connect(url, pki, name, ca=None):
    return cc.Client.connect(url, ca=ca or os.path.join(pki, "ca.crt"),
                             cert=os.path.join(pki, name + ".crt"),
                             key=os.path.join(pki, name + ".key"))


def sec_acl(tcp_url, tls_url, pki, psk_file=None):
    # the admin (over TLS, client certificate CN "ops") makes some files
    ops = tls_connect(tls_url, pki, "ops")
    h = ops.hello()
    eq((h.identity, h.role, list(h.prefixes)), ("ops", "admin", []), "hello over tls: ops")
    ver = ops.sock.version()
    eq(ver, "TLSv1.2", "tls version")
    cipher = ops.sock.cipher()[0]
    check(cipher in ("ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-GCM-SHA256",
                     "ECDHE-ECDSA-AES256-GCM-SHA384"), "tls cipher suite %s is one of TLS.md's" % cipher)
    ops.ok("mkdir", path="/usr/app", parents=True)
    ops.write_file("/usr/app/main.py", b"print('hi')\n")
    ops.write_file("/usr/top.txt", b"top\n")
    ops.ok("backup")
    ops.ok("gc_config", partition="/usr", threshold=8)

    # anonymous over plain tcp: a reader
    a = cc.Client.connect(tcp_url)
    h = a.hello()
    eq((h.identity, h.role, list(h.prefixes)), ("anonymous", "reader", []), "hello over tcp: anonymous")
    before = snapshot(a)
    who = ("anonymous", "reader", "ACL line 4")
    denied = [
        ("open", dict(path="/usr/top.txt", flags=O_WRITE)),
        ("open", dict(path="/usr/new.txt", flags=O_WRITE | O_CREATE)),
        ("open", dict(path="/usr/top.txt", flags=O_READ | O_TRUNC)),
        ("mkdir", dict(path="/usr/x")),
        ("remove", dict(path="/usr/top.txt")),
        ("rmdir", dict(path="/usr/app")),
        ("rename", {"from": "/usr/top.txt", "to": "/usr/t2.txt"}),
        ("truncate", dict(path="/usr/top.txt", size=1)),
        ("gc", dict(partition="/usr")),
        ("gc_config", dict(partition="/usr", threshold=20)),
        ("format", dict(partition="/usr", confirm=True)),
        ("update_begin", dict(bundle=b"\1" * 32, entries=1, bytes=3)),
        ("update_abort", dict()),
        ("manifest_import", dict(entries=[pb.ManifestEntry(path="/usr/top.txt", size=1, sha256=b"\0" * 32)])),
        ("backup", dict()),
        ("restore", dict(paths=["/usr/top.txt"])),
        ("verify", dict(partition="/usr", repair=True)),
    ]
    for op, f in denied:
        fails(c=a, code=E.EACCES, op=op, what="anonymous reader: " + op, has=who, **f)
    # what a reader may do
    eq(a.read_file("/usr/top.txt"), b"top\n", "reader reads")
    a.ok("stat", path="/usr/app/main.py")
    a.ok("verify", partition="/usr")
    a.ok("ping", payload=b"r")
    eq(snapshot(a), before, "denied requests changed nothing")
    a.close()

    # alice: a writer under /usr/app
    w = tls_connect(tls_url, pki, "alice")
    h = w.hello()
    eq((h.identity, h.role, list(h.prefixes)), ("alice", "writer", ["/usr/app"]),
       "hello over tls: alice's identity is her certificate's CN")
    w.write_file("/usr/app/lib.py", b"X = 1\n")
    w.ok("rename", **{"from": "/usr/app/lib.py", "to": "/usr/app/lib2.py"})
    who = ("alice", "writer", "ACL line 3")
    fails(w, E.EACCES, "open", "writer outside its prefix", has=who + ("/usr/app",),
          path="/usr/top.txt", flags=O_WRITE)
    fails(w, E.EACCES, "rename", "writer renames out of its prefix", has=who,
          **{"from": "/usr/app/lib2.py", "to": "/usr/lib2.py"})
    fails(w, E.EACCES, "format", "writer formats", has=who, partition="/usr", confirm=True)
    err = fails(w, E.EACCES, "gc_config", "writer: gc_config needs admin", has=who + ("admin only",),
                partition="/usr", threshold=9)
    check("format" not in err.message, "gc_config denial does not speak of format: %r" % err.message)
    fails(w, E.EACCES, "gc", "writer with prefixes: gc (needs a writer allowed everywhere)", has=who,
          partition="/usr")
    eq(ops.ok("statfs", path="/usr").gc_threshold, 8, "gc_config refused: threshold unchanged")
    sess, ctx = w.sock.session, w.sock.context
    w.close()
    # a resumed session (the device's ticket) keeps the certificate's identity
    w = cc.Client.connect(tls_url, context=ctx, session=sess)
    check(w.sock.session_reused, "tls: the session resumes with the device's ticket")
    h = w.hello()
    eq((h.identity, h.role), ("alice", "writer"), "tls: a resumed session keeps its identity")
    w.close()

    # a writer without prefixes (field-tool) may Gc, not GcConfig
    f = tls_connect(tls_url, pki, "field")
    h = f.hello()
    eq((h.identity, h.role, list(h.prefixes)), ("field", "writer", []), "hello over tls: field")
    g = f.ok("gc", partition="/usr")
    check(g.free_after >= g.free_before, "writer without prefixes: gc")
    fails(f, E.EACCES, "gc_config", "writer: gc_config", has=("field", "writer"), partition="/usr", threshold=9)
    f.close()
    r = ops.ok("gc_config", partition="/usr", threshold=10)
    eq((r.threshold, r.previous), (10, 8), "admin: gc_config")

    # a certificate of the CA without an ACL rule: nothing, Hello included
    m = tls_connect(tls_url, pki, "mallory")
    err = fails(m, E.EACCES, "hello", "no ACL rule: hello", has=("mallory", "no ACL rule"),
                version=1)
    m.close()
    # a certificate from another CA: the handshake fails (the device checks it)
    try:
        x = tls_connect(tls_url, pki, "other/eve")
        x.hello()
        check(False, "a client certificate from another CA was accepted")
    except (ssl.SSLError, OSError, cc.Closed, cc.CellarError):
        check(True, "")
    # the device's certificate must chain to our CA (Python checks it)
    try:
        tls_connect(tls_url, pki, "alice", ca=os.path.join(pki, "other", "ca.crt")).hello()
        check(False, "a device certificate from another CA was accepted")
    except ssl.SSLCertVerificationError:
        check(True, "")
    # without a client certificate, --tls-ca refuses the handshake
    try:
        cc.Client.connect(tls_url, ca=os.path.join(pki, "ca.crt")).hello()
        check(False, "a tls client without a certificate was accepted")
    except (ssl.SSLError, OSError, cc.Closed, cc.CellarError):
        check(True, "")
    ops.close()

    # a writer with the prefix /usr may not Gc: Gc writes the whole device
    wd = tls_connect(tls_url, pki, "wide")
    eq(list(wd.hello().prefixes), ["/usr"], "hello: wide's prefixes")
    fails(wd, E.EACCES, "gc", "writer under /usr: gc", has=("wide", "ACL line 6", "all of /"),
          partition="/usr")
    wd.close()
    rw = tls_connect(tls_url, pki, "rootw")
    eq(list(rw.hello().prefixes), ["/"], "hello: rootw's prefixes")
    rw.ok("gc", partition="/bak")
    rw.close()

    # PSK: Python's ssl has it from 3.13 only; openssl s_client is another
    # independent TLS stack that has it
    if psk_file:
        ident, key = open(psk_file).read().split()[:2]
        if not shutil.which("openssl"):
            print("acl: skipped PSK: no openssl command (Python %d.%d's ssl has no PSK)"
                  % sys.version_info[:2])
        else:
            hp = tls_url[len("tls://"):]
            p = cc.Client(cc.OpensslPsk(hp, ident, key))
            h = p.hello()
            eq((h.identity, h.role, list(h.prefixes)), (ident, "writer", ["/usr/psk"]),
               "hello over tls with a PSK (openssl s_client): identity = PSK identity")
            p.ok("mkdir", path="/usr/psk")
            p.write_file("/usr/psk/f", b"psk" * 1000)
            eq(p.read_file("/usr/psk/f"), b"psk" * 1000, "PSK client writes and reads")
            fails(p, E.EACCES, "remove", "PSK writer outside its prefix", has=(ident, "ACL line 7"),
                  path="/usr/top.txt")
            p.close()
            # a wrong key fails the handshake: nothing is answered
            p = cc.Client(cc.OpensslPsk(hp, ident, "00" * 32))
            try:
                p.hello()
                check(False, "a wrong PSK key was accepted")
            except (cc.Closed, OSError, ValueError):
                check(True, "")
            p.close()


# ---- the SD card ------------------------------------------------------------
def sec_sd(url, card):
    c = cc.Client.connect(url)
    h = c.hello()
    parts = {p.path: p for p in h.partitions}
    check("/sd" in parts, "hello lists /sd")
    if "/sd" not in parts:
        return
    sd = parts["/sd"]
    eq(sd.kind, pb.PART_FAT, "/sd kind (field 60)")
    eq(parts["/usr"].kind, pb.PART_CFS, "/usr kind")
    eq(sd.state, pb.PART_OK, "/sd state")
    eq(sd.block_count, os.path.getsize(card) // h.block_size, "/sd block_count = card size / block_size")
    eq(sorted(c.list_all("/")), ["bak", "sd", "usr"], "list / shows sd")

    data = os.urandom(70001)
    o = c.ok("open", path="/sd/Hello World.txt", flags=O_WRITE | O_CREATE | O_TRUNC)
    eq(o.handle & 15, 15, "/sd handle ends in hex F")
    for off in range(0, len(data), 16384):
        eq(c.ok("write", handle=o.handle, offset=off, data=data[off:off + 16384]).written,
           len(data[off:off + 16384]), "write /sd at %d" % off)
    c.ok("close", handle=o.handle)
    eq(c.read_file("/sd/Hello World.txt"), data, "/sd file reads back")
    eq(c.read_file("/sd/HELLO WORLD.TXT"), data, "/sd names ignore ASCII case")
    st = c.ok("stat", path="/sd/hello world.txt").info
    eq((st.type, st.size), (pb.FILE, len(data)), "stat on /sd")
    eq(c.ok("hash", path="/sd/Hello World.txt").sha256, hashlib.sha256(data).digest(), "hash on /sd")
    check("Hello World.txt" in c.list_all("/sd"), "list /sd shows the long name")
    check(".cellar" not in c.list_all("/sd"), "list /sd hides .cellar")
    # names FAT cannot hold: refused by Open itself (not at Close)
    for bad in ('a:b', 'a*b', 'a?b', 'a<b', 'a>b', 'a\\b', 'a|b', 'a"b', 'dot.', 'space ', 'ctl\x01'):
        fails(c, E.EINVAL, "open", "open of %r on /sd" % bad, path="/sd/" + bad, flags=O_WRITE | O_CREATE)
        fails(c, E.EINVAL, "mkdir", "mkdir of %r on /sd" % bad, path="/sd/" + bad)
        fails(c, E.EINVAL, "rename", "rename to %r on /sd" % bad,
              **{"from": "/sd/Hello World.txt", "to": "/sd/" + bad})
    fails(c, E.EINVAL, "rename", "rename /sd -> /usr", **{"from": "/sd/Hello World.txt", "to": "/usr/h"})
    fails(c, E.EACCES, "stat", "/sd/.cellar is reserved", path="/sd/.cellar")
    c.ok("mkdir", path="/sd/logs/2026", parents=True)
    c.write_file("/sd/logs/2026/a.log", b"line\n")
    s = c.ok("statfs", path="/sd")
    check(s.total > 0 and s.free > 0, "statfs /sd: total, free")
    eq(s.free, s.available, "statfs /sd: free = available")
    check(s.block_size >= 512 and s.block_size & (s.block_size - 1) == 0,
          "statfs /sd: block_size is a cluster size (%d)" % s.block_size)
    eq(s.block_size * s.block_count, s.total, "statfs /sd: clusters * cluster size = total")
    eq(s.total - s.free, s.used, "statfs /sd: used = total - free")
    eq((s.page_size, s.pages_free, s.pages_used, s.gc_threshold, s.files), (0, 0, 0, 0, 0),
       "statfs /sd: no page statistics, threshold or file counts")
    eq(c.ok("stat", path="/sd/logs/2026/a.log").info.id, 0, "files on /sd have no id")
    fails(c, E.ENOENT, "gc", "gc of /sd", partition="/sd")
    fails(c, E.ENOENT, "gc_config", "gc_config of /sd", partition="/sd", threshold=8)
    c.close()
    # the card as another FAT implementation (mtools) sees it
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    got = subprocess.run(["mtype", "-i", card, "::/Hello World.txt"], capture_output=True, env=env)
    eq(got.stdout, data, "mtools reads the file off the card")
    got = subprocess.run(["mtype", "-i", card, "::/logs/2026/a.log"], capture_output=True, env=env)
    eq(got.stdout, b"line\n", "mtools reads the file in a new directory")


def main():
    sec, args = sys.argv[1], sys.argv[2:]
    try:
        {"gc": sec_gc, "pipeline": sec_pipeline, "acl": sec_acl, "sd": sec_sd}[sec](*args)
    except Exception as e:  # an unexpected error or exception is a failure
        import traceback
        traceback.print_exc()
        check(False, "%s: %s: %s" % (sec, type(e).__name__, e))
    print("%s: %d passed, %d failed" % (sec, passed, failed), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
