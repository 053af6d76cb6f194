#!/usr/bin/env python3
"""size_report.py - `make size` and `make ram` (issue 14, docs/DEVICE.md).

  size_report.py --build B --json B/size.json size OBJ...
      .text/.data/.bss of each cross-compiled object (arm-none-eabi-size),
      the sums per module and the code target.
  size_report.py --build B --json B/size.json ram --probe PROBE.o OBJ...
      sizeof of the service's objects (tests/size/ram_probe.c, read with
      arm-none-eabi-nm), and the worst-case stack of the request paths: each
      function's frame from -fstack-usage, its calls from -fcallgraph-info
      (the .ci file beside each object), summed along the deepest path.

Both merge their part into the JSON file (keys "size" and "ram").
Indirect calls are resolved from the table INDIRECT below (the dispatch
table, the job kinds); the firmware's callbacks (flash device, clock, log)
and the nanopb runtime (a library) count 0 bytes and are listed.
"""
import argparse
import json
import os
import re
import subprocess
import sys

CODE_TARGET = 48 * 1024          # fs, service core, updates, codec, pb
RAM_ONE_TARGET = 16 * 1024       # svc_t + both partitions + one connection
RAM_CONN_TARGET = 4 * 1024       # each further connection
STACK_TARGET = 4 * 1024          # any request path
# Issue 14's split of those targets between the service and the fs (cfs):
SVC_RAM_TARGET = 9800            # svc_t without its two cfs_t
SVC_STACK_TARGET = 1536          # service frames on a request path (fs: 0)
FS_STACK_TARGET = 2560           # any path from a public cfs_* call (issue 14)

UPDATES = {"txn.c", "manifest.c", "svc_update.c", "svc_copy.c",
           "svc_manifest_rpc.c"}


def module_of(obj):
    p = obj.replace(os.sep, "/")
    base = os.path.basename(p)[:-2] + ".c"
    m = re.search(r"/arm(-min)?/(fs|gen|transport)/", p)
    if m and m.group(2) == "fs":
        return "fs"
    if m and m.group(2) == "gen":
        return "generated pb"
    if m and m.group(2) == "transport":
        return "transport"
    if base == "codec.c":
        return "codec"
    if base in UPDATES:
        return "updates"
    return "service core"


def merge_json(path, key, value):
    data = {}
    if os.path.exists(path):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = {}
    data[key] = value
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def cmd_size(args):
    rows = []
    for obj in args.objs:
        out = run(["arm-none-eabi-size", obj]).splitlines()
        text, data, bss = (int(x) for x in out[1].split()[:3])
        rows.append((obj, module_of(obj), text, data, bss))
    print("%-40s %-13s %7s %6s %6s" % ("object (Cortex-M4, -Os, device)",
                                       "module", ".text", ".data", ".bss"))
    for obj, mod, t, d, b in rows:
        name = os.path.relpath(obj, os.path.join(args.build, "arm"))
        print("%-40s %-13s %7d %6d %6d" % (name, mod, t, d, b))
    mods = {}
    for _, mod, t, d, b in rows:
        m = mods.setdefault(mod, [0, 0, 0])
        m[0] += t
        m[1] += d
        m[2] += b
    print()
    order = ["fs", "service core", "updates", "codec", "generated pb",
             "transport"]
    for mod in order:
        if mod in mods:
            t, d, b = mods[mod]
            print("%-54s %7d %6d %6d" % ("sum " + mod, t, d, b))
    code = sum(mods[m][0] for m in order[:5] if m in mods)
    total = sum(v[0] for v in mods.values())
    print("%-54s %7d" % ("code (fs, service core, updates, codec, pb)", code))
    print("%-54s %7d" % ("device set (+ transport/tp.c)", total))
    ok = code <= CODE_TARGET
    print("target: code <= %d bytes: %s (%d)" % (CODE_TARGET,
          "met" if ok else "NOT met", code))
    print("not included: the nanopb runtime (libprotobuf-nanopb), libc, "
          "mbedTLS SHA-256")
    extra = compare(args, rows, code)
    merge_json(args.json, "size", {
        "profile": "device (CELLAR_PROFILE_DEVICE, -Os, cortex-m4)",
        "objects": [{"object": os.path.relpath(o, os.path.join(args.build, "arm")),
                     "module": m, "text": t, "data": d, "bss": b}
                    for o, m, t, d, b in rows],
        "modules": {m: {"text": v[0], "data": v[1], "bss": v[2]}
                    for m, v in mods.items()},
        "code_text": code, "device_set_text": total,
        "code_target": CODE_TARGET, "code_target_met": ok,
        **extra,
    })
    return 0


# ---- issue 14 (code size): the minimal build and a --gc-sections link ------

CODE_MODS = ["fs", "service core", "updates", "codec", "generated pb"]


def sizes_of(objs):
    rows = []
    for obj in objs:
        out = run(["arm-none-eabi-size", obj]).splitlines()
        text, data, bss = (int(x) for x in out[1].split()[:3])
        rows.append((obj, module_of(obj), text, data, bss))
    return rows


def mod_text(rows):
    mods = {m: 0 for m in CODE_MODS}
    for _, mod, t, _, _ in rows:
        if mod in mods:
            mods[mod] += t
    return mods


def roots_of(headers):
    """The public svc_* functions: every svc_NAME( in the headers given."""
    names = set()
    for h in headers:
        with open(h) as f:
            names |= set(re.findall(r"\b(svc_[a-z0-9_]+)\s*\(", f.read()))
    return sorted(names)


# an input section of the map: " .text.name  0xADDR  0xSIZE file.o" (a
# long name wraps: the address goes on the next line)
MAP_SEC = re.compile(r"^ (\.[^\s]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+\.o)$",
                     re.M)


def gc_link(args, objs, roots, tag):
    """Link the code objects (no transport) as a firmware would, with
    --gc-sections and the roots kept (-u); libc, nanopb and mbedTLS stay
    unresolved (not counted). .text per module from the link map."""
    objs = [o for o in objs if module_of(o) in CODE_MODS]
    elf = os.path.join(args.build, "arm", "device-%s.elf" % tag)
    mp = elf[:-4] + ".map"
    cmd = ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-nostdlib",
           "-Wl,--gc-sections", "-Wl,--unresolved-symbols=ignore-all",
           "-Wl,-e,svc_process", "-Wl,-Map=" + mp, "-o", elf]
    cmd += ["-Wl,-u," + r for r in roots] + objs
    run(cmd)
    with open(mp) as f:
        text = f.read()
    text = text[text.index("Linker script and memory map"):]
    text = re.sub(r"^ (\.\S+)\n\s+0x", r" \1 0x", text, flags=re.M)  # unwrap
    mods = {m: 0 for m in CODE_MODS}
    for sec, _, size, obj in MAP_SEC.findall(text):
        # string literals (.rodata.*.str1.1) are merged across objects: the
        # map cannot attribute them; they are the "strings" row
        if sec.startswith((".text", ".rodata", ".data")) and \
                not re.search(r"\.str[0-9]", sec):
            mods[module_of(obj)] += int(size, 16)
    out = run(["arm-none-eabi-size", elf]).splitlines()
    total = int(out[1].split()[0])
    mods["strings"] = total - sum(mods.values())
    return mods, total


def compare(args, rows, code):
    min_objs = args.min.split() if args.min else []
    if not min_objs:
        return {}
    roots = roots_of(args.roots.split()) if args.roots else ["svc_process"]
    mrows = sizes_of(min_objs)
    full, mini = mod_text(rows), mod_text(mrows)
    full_gc, full_gc_total = gc_link(args, [r[0] for r in rows], roots, "full")
    min_gc, min_gc_total = gc_link(args, min_objs, roots, "min")
    cols = [("full", full, code), ("minimal", mini, sum(mini.values())),
            ("full,gc", full_gc, full_gc_total),
            ("minimal,gc", min_gc, min_gc_total)]
    print()
    print("code .text per module: the full device set, the minimal build "
          "(CELLAR_WITH_SD/RAW/ACL/LOG 0, no fs/fat),")
    print("and each linked with --gc-sections (roots: %d public svc_* "
          "functions of %s)" % (len(roots), args.roots))
    print("%-22s" % "module" + "".join("%12s" % c[0] for c in cols))
    for m in CODE_MODS + ["strings"]:
        print("%-22s" % m + "".join("%12s" % c[1].get(m, "in modules")
                                     for c in cols))
    print("%-22s" % "code" + "".join("%12d" % c[2] for c in cols))
    for name, _, t in cols:
        print("target: code <= %d bytes, %s build: %s (%d, %d over)" % (
            CODE_TARGET, name, "met" if t <= CODE_TARGET else "NOT met",
            t, max(0, t - CODE_TARGET)))
    return {
        "minimal": {
            "flags": "CELLAR_WITH_SD=0 CELLAR_WITH_RAW=0 CELLAR_WITH_ACL=0 CELLAR_WITH_LOG=0, no fs/fat",
            "objects": [{"object": os.path.relpath(o, args.build), "module": m,
                         "text": t, "data": d, "bss": b}
                        for o, m, t, d, b in mrows],
            "modules": mini, "code_text": sum(mini.values()),
            "code_target_met": sum(mini.values()) <= CODE_TARGET},
        "gc_sections": {
            "roots": roots,
            "full": {"modules": full_gc, "code_text": full_gc_total,
                     "code_target_met": full_gc_total <= CODE_TARGET},
            "minimal": {"modules": min_gc, "code_text": min_gc_total,
                        "code_target_met": min_gc_total <= CODE_TARGET}},
    }


# ---- RAM -------------------------------------------------------------------

def probe_sizes(probe):
    sizes = {}
    for line in run(["arm-none-eabi-nm", "-S", probe]).splitlines():
        f = line.split()
        if len(f) == 4 and f[3].startswith("ram_"):
            sizes[f[3][4:]] = int(f[1], 16)
    return sizes


NODE = re.compile(r'node: \{ title: "([^"]*)" label: "([^"]*)"')
EDGE = re.compile(r'edge: \{ sourcename: "([^"]*)" targetname: "([^"]*)"')
FRAME = re.compile(r'\\n(\d+) bytes \(([a-z,]+)\)')

# Indirect calls of the device set: caller (short name) -> callees.
INDIRECT = {
    "dispatch": "h_*",                       # the request table
    "svc_job_step": ["svc_update_job_step"],  # s->job_kinds (svc_int.h)
    "svc_job_cancel": ["svc_update_job_cancel"],
}
# Recursion with a bound in the code: function -> levels.
RECURSION = {"scan_msg": 4}                  # codec.c: SCAN_LEVELS
ENTRIES = ["svc_process", "svc_tick", "svc_conn_close", "svc_setup",
           "svc_free"]
# Nestings the code rules out (issue 14, docs/FS.md section 8), each checked
# at run time by a CFS_ASSERT the fs tests run with: function -> callers
# below which it is never reached. No GC pass starts below a commit being
# made: every commit is made inside an operation or a GC pass (in_op /
# in_gc), whose guards keep a checkpoint from running GC (cfs_gc_run
# asserts !fs->in_commit).
NOT_BELOW = {"cfs_gc_run": {"cfs_commit"}}
GUARDS = set().union(*NOT_BELOW.values())


def base(title):
    return short(title).split(".")[0]


def short(title):
    return title.rsplit(":", 1)[-1]


def load_graph(objs, root):
    frames, kinds, calls, defined = {}, {}, {}, {}
    for obj in objs:
        ci = obj[:-2] + ".ci"
        if not os.path.exists(ci):
            continue
        with open(ci) as f:
            text = f.read()
        for title, label in NODE.findall(text):
            m = FRAME.search(label)
            if m:
                frames[title] = int(m.group(1))
                kinds[title] = m.group(2)
                defined.setdefault(short(title), []).append(title)
        for a, b in EDGE.findall(text):
            calls.setdefault(a, [])
            if b not in calls[a]:
                calls[a].append(b)
    return frames, kinds, calls, defined


def resolve(name, frames, defined, src):
    """A call target: a static function of the same file, else the global."""
    if name in frames:
        return [name]
    if name == "__indirect_call":
        callee = INDIRECT.get(short(src))
        if callee == "h_*":
            return [t for s, ts in defined.items() if s.startswith("h_")
                    for t in ts if t.split(":")[0] == src.split(":")[0]]
        out = []
        for c in callee or []:
            out += defined.get(c, [])
        return out if out else None
    got = defined.get(name)
    return got if got else None


def worst(entry, frames, kinds, calls, defined, ext):
    memo = {}

    def go(fn, stack, ctx=frozenset()):
        if base(fn) in GUARDS:
            ctx = ctx | {base(fn)}
        if (fn, ctx) in memo:
            return memo[(fn, ctx)]
        if fn in stack:  # recursion not in RECURSION: report, count once
            ext.add("recursion: " + short(fn))
            return (0, [])
        own = frames.get(fn, 0)
        if short(fn) in RECURSION:
            own *= RECURSION[short(fn)]
        best = (0, [])
        for callee in calls.get(fn, []):
            targets = resolve(callee, frames, defined, fn)
            if targets is None:
                ext.add(short(callee))
                continue
            for t in targets:
                if t == fn:
                    continue  # bounded self-recursion: counted above
                if NOT_BELOW.get(base(t), set()) & ctx:
                    continue  # ruled out (NOT_BELOW)
                d = go(t, stack | {fn}, ctx)
                if d[0] > best[0]:
                    best = d
        res = (own + best[0], [(short(fn), frames.get(fn, 0))] + best[1])
        memo[(fn, ctx)] = res
        return res

    roots = defined.get(entry, [])
    if not roots:
        return None
    return go(roots[0], frozenset())


def cmd_ram(args):
    sz = probe_sizes(args.probe)
    svc, conn = sz["svc_t"], sz["svc_conn_t"]
    # static data of the device set (tables in .data/.bss)
    statics = 0
    for obj in args.objs:
        out = run(["arm-none-eabi-size", obj]).splitlines()
        _, d, b = (int(x) for x in out[1].split()[:3])
        statics += d + b
    one = svc + conn + statics
    print("RAM (device profile, Cortex-M4)                 bytes")
    print("  svc_t (both partitions mounted: all inside)  %6d" % svc)
    for k in ["svc_part_t", "cfs_t", "cfs_work_t", "man_t", "txn_t", "txn_work_t",
              "txn_index_t", "svc_job_t", "svc_copy_t",
              "cellar_Response", "svc_path_t", "man_entry_t", "svc_scratch",
              "svc_problems", "csha_t"]:
        if k in sz:
            print("    %-40s %6d" % (k, sz[k]))
    print("  svc_conn_t (each connection)                 %6d" % conn)
    for k in ["conn_inbuf", "conn_out", "conn_handles", "svc_handle_t"]:
        if k in sz:
            print("    %-40s %6d" % (k, sz[k]))
    # issue 14 (svcram2): the decoded request is held in the output queue
    # (SVC_REQ_IN_QUEUE), not in svc_t
    if "cellar_Request" in sz:
        print("    %-40s %6d" % ("cellar_Request (held in conn_out)",
                                  sz["cellar_Request"]))
    print("  .data + .bss of the device set               %6d" % statics)
    print("  svc_t + one connection + statics             %6d" % one)
    svc_only = svc - 2 * sz.get("cfs_t", 0)
    print("  svc_t without its two cfs_t (the service's)  %6d" % svc_only)
    ok_svc = svc_only <= SVC_RAM_TARGET
    ok_one = one <= RAM_ONE_TARGET
    ok_conn = conn <= RAM_CONN_TARGET
    print("target: svc_t + partitions + one connection <= %d: %s" %
          (RAM_ONE_TARGET, "met" if ok_one else "NOT met (%d over)" %
           (one - RAM_ONE_TARGET)))
    print("target: each further connection <= %d: %s" %
          (RAM_CONN_TARGET, "met" if ok_conn else "NOT met"))
    print("service's share: svc_t without cfs_t <= %d: %s" %
          (SVC_RAM_TARGET, "met" if ok_svc else "NOT met (%d over)" %
           (svc_only - SVC_RAM_TARGET)))

    frames, kinds, calls, defined = load_graph(args.objs, args.build)
    print()
    print("worst-case stack (-fstack-usage frames along the deepest call path)")
    stacks = {}
    worst_req = 0
    for e in ENTRIES:
        ext = set()
        r = worst(e, frames, kinds, calls, defined, ext)
        if r is None:
            continue
        depth, path = r
        dyn = [p for p, _ in path
               if any("dynamic" in kinds.get(t, "") for t in defined.get(p, []))]
        stacks[e] = {"bytes": depth, "path": [{"fn": p, "frame": f} for p, f in path],
                     "dynamic": dyn,
                     "external": sorted(x for x in ext if not x.startswith("recursion"))[:40],
                     "recursion": sorted(x for x in ext if x.startswith("recursion"))}
        print("  %-16s %6d bytes, %d calls deep" % (e, depth, len(path)))
        print("      " + " > ".join("%s(%d)" % p for p in path))
        if e != "svc_setup" and e != "svc_free":
            worst_req = max(worst_req, depth)
    ok_stack = worst_req <= STACK_TARGET
    print("target: request paths (svc_process, svc_tick, svc_conn_close) "
          "<= %d: %s (%d)" % (STACK_TARGET, "met" if ok_stack else "NOT met",
                              worst_req))
    # the service's frames alone: the fs (fs/*.o) counted as 0
    fsf = dict(frames)
    for obj in args.objs:
        if "/arm/fs/" in obj.replace(os.sep, "/"):
            ci = obj[:-2] + ".ci"
            if os.path.exists(ci):
                with open(ci) as f:
                    for title, label in NODE.findall(f.read()):
                        if title in fsf:
                            fsf[title] = 0
    svc_stack = {}
    print("service frames only (the fs's counted as 0):")
    for e in ENTRIES:
        r = worst(e, fsf, kinds, calls, defined, set())
        if r is None:
            continue
        svc_stack[e] = {"bytes": r[0], "path": [{"fn": p, "frame": fsf_f}
                        for p, fsf_f in r[1] if fsf_f]}
        print("  %-16s %6d bytes: %s" % (e, r[0], " > ".join(
            "%s(%d)" % (p, f) for p, f in r[1] if f)))
    svc_req = max(v["bytes"] for k, v in svc_stack.items()
                  if k not in ("svc_setup", "svc_free"))
    ok_svc_stack = svc_req <= SVC_STACK_TARGET
    print("service's share: request paths <= %d: %s (%d)" %
          (SVC_STACK_TARGET, "met" if ok_svc_stack else "NOT met", svc_req))
    # the filesystem's share: every public cfs_* call (fs/cfs.h)
    fs_entries = sorted(set(re.findall(r"\b(cfs_[a-z_]+)\(",
                                       open(os.path.join(os.path.dirname(
                                           os.path.abspath(__file__)),
                                           "..", "..", "fs", "cfs.h")).read())))
    fs_stacks = []
    for e in fs_entries:
        ext = set()
        r = worst(e, frames, kinds, calls, defined, ext)
        if r is not None:
            fs_stacks.append((r[0], e, r[1], ext))
    fs_stacks.sort(key=lambda x: -x[0])
    fs_worst = fs_stacks[0][0] if fs_stacks else 0
    print()
    print("worst-case stack of the filesystem's public calls (fs/cfs.h)")
    for depth, e, path, _ in fs_stacks[:6]:
        print("  %-22s %6d bytes, %d calls deep" % (e, depth, len(path)))
        print("      " + " > ".join("%s(%d)" % p for p in path))
    print("  others: " + ", ".join("%s %d" % (e, d) for d, e, _, _ in fs_stacks[6:]))
    ok_fs = fs_worst <= FS_STACK_TARGET
    print("target: every public cfs_* call <= %d: %s (%d)" % (
        FS_STACK_TARGET, "met" if ok_fs else "NOT met", fs_worst))
    print("ruled out (NOT_BELOW, asserted at run time): " + ", ".join(
        "%s below %s" % (k, "/".join(sorted(v))) for k, v in NOT_BELOW.items()))
    rec = sorted({x[len("recursion: "):] for v in stacks.values()
                  for x in v["recursion"]})
    if rec:
        print("call cycles (each function counted once per path; their depth "
              "is bounded by the code, not by this sum): " + ", ".join(rec))
    ext_all = sorted({x for v in stacks.values() for x in v["external"]})
    print("counted as 0 (firmware callbacks, libc, nanopb runtime, mbedTLS): "
          + ", ".join(ext_all[:30]) + (" ..." if len(ext_all) > 30 else ""))
    merge_json(args.json, "ram", {
        "profile": "device (CELLAR_PROFILE_DEVICE, cortex-m4)",
        "sizeof": sz, "statics": statics,
        "svc_plus_one_conn": one, "per_conn": conn,
        "target_one": RAM_ONE_TARGET, "target_one_met": ok_one,
        "target_conn": RAM_CONN_TARGET, "target_conn_met": ok_conn,
        "stack": stacks, "stack_request_worst": worst_req,
        "stack_target": STACK_TARGET, "stack_target_met": ok_stack,
        "svc_without_cfs": svc_only, "svc_target": SVC_RAM_TARGET,
        "svc_target_met": ok_svc, "svc_stack": svc_stack,
        "svc_stack_request_worst": svc_req,
        "svc_stack_target": SVC_STACK_TARGET,
        "svc_stack_target_met": ok_svc_stack,
        "fs_stack": {e: {"bytes": d, "path": [{"fn": p, "frame": f} for p, f in path]}
                     for d, e, path, _ in fs_stacks},
        "fs_stack_worst": fs_worst, "fs_stack_target": FS_STACK_TARGET,
        "fs_stack_target_met": ok_fs,
    })
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--json", default="build/size.json")
    ap.add_argument("--probe")
    ap.add_argument("--min", help="objects of the minimal build (one string)")
    ap.add_argument("--roots", help="headers whose svc_* functions are the "
                    "roots of the --gc-sections link")
    ap.add_argument("what", choices=["size", "ram"])
    ap.add_argument("objs", nargs="+")
    args = ap.parse_args()
    return cmd_size(args) if args.what == "size" else cmd_ram(args)


if __name__ == "__main__":
    sys.exit(main())
