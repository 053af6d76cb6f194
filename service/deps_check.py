#!/usr/bin/env python3
"""deps_check.py OBJ... - the service core's files call only downwards.

Each object file of service/ (cellard.c, the host main, is not one of them)
is given its place in LAYERS, bottom first. For every symbol an object
uses (nm: undefined) that another object of the list defines, the user
must sit above the definer: a call (or a function's address taken) that
points up or sideways is a cycle in the making and fails the check, and
so does a file missing from LAYERS. The device files below the service
core (codec, layout, manifest, txn) must not include its headers.
The graph is drawn in docs/ARCHITECTURE.md, "Service core".
"""
import os
import re
import subprocess
import sys

# Bottom first. A file may use only the files before it.
LAYERS = [
    "codec", "layout", "manifest", "txn",      # below the service core
    "svc_msg",           # message builder, codes, logging, error replies
    "svc_part",          # partitions, problems, the room rule
    "svc_path",          # path rules
    "svc_acl",           # access control: ACL, identities, roles (issue 13)
    "svc_conn",          # connection queues, queueing a reply
    "svc_job",           # long requests: hashing in steps, run, cancel
    "svc_raw",           # raw partitions (issue 15): requests, installs
    "svc_store",         # mount-time store work, shadows, handles
    "svc_file",          # the file RPCs
    "svc_copy",          # Backup, Restore (copies in steps)
    "svc_update",        # the update RPCs
    "svc_manifest_rpc",  # Manifest, ManifestImport, Verify; job kinds
    "svc_sd",            # issue 15: the file requests on /sd (FAT card)
    "svc_core",          # setup/free, connections opened and closed, tick
    "svc_dispatch",      # the dispatch table, svc_process
]
BELOW_CORE = ["codec", "layout", "manifest", "txn"]
CORE_HEADERS = re.compile(r'#\s*include\s+"(svc_core|svc_int)\.h"')


def nm(obj, *flags):
    out = subprocess.run(["nm", *flags, obj], check=True,
                         capture_output=True, text=True).stdout
    return [ln.split()[-1] for ln in out.splitlines() if ln.strip()]


def main(objs):
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = 0
    defs, uses = {}, {}
    for o in objs:
        f = os.path.splitext(os.path.basename(o))[0]
        if f not in rank:
            print(f"deps-check: {f}.c has no place in the layers "
                  f"(service/deps_check.py LAYERS)")
            bad += 1
            continue
        for sym in nm(o, "-g", "--defined-only"):
            defs[sym] = f
        uses[f] = set(nm(o, "-u"))
    edges = set()
    for f, syms in uses.items():
        for sym in syms:
            g = defs.get(sym)
            if g and g != f:
                edges.add((f, g, sym))
    for f, g, sym in sorted(edges):
        if rank[g] >= rank[f]:
            print(f"deps-check: {f}.c uses {sym} of {g}.c, "
                  f"which is not below it")
            bad += 1
    srcdir = os.path.dirname(os.path.abspath(__file__))
    for f in BELOW_CORE:
        path = os.path.join(srcdir, f + ".c")
        if os.path.exists(path) and CORE_HEADERS.search(open(path).read()):
            print(f"deps-check: {f}.c includes a service core header")
            bad += 1
    files = sorted({f for f, _, _ in edges} | {g for _, g, _ in edges},
                   key=lambda x: rank[x])
    print(f"deps-check: {len(uses)} files, "
          f"{len({(f, g) for f, g, _ in edges})} file-to-file dependencies, "
          + ("all pointing down" if not bad else f"{bad} problems"))
    if "-v" in sys.argv:
        for f in files:
            below = sorted({g for ff, g, _ in edges if ff == f},
                           key=lambda x: rank[x])
            print(f"  {f}: {' '.join(below) if below else '-'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main([a for a in sys.argv[1:] if a != "-v"]))
