#!/usr/bin/env python3
"""Compare runtime/proto/cri.proto with the CRI v1 descriptor compiled into a containerd binary.

    check-against-containerd.py [CONTAINERD] [CRI_PROTO]

containerd (Go, gogo-protobuf) carries every generated .proto as a gzipped FileDescriptorProto.
This finds the one of package runtime.v1, compiles ours with protoc, and checks that every
message, field (number, type, label, message/enum type), enum value and RPC we declare exists in
containerd's with the same facts. Exit status 1 on any difference. Needs python3 and protoc only
(the protobuf wire format is decoded by hand below).
"""
import os
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
BINARY = sys.argv[1] if len(sys.argv) > 1 else "/usr/bin/containerd"
PROTO = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "cri.proto")


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def fields(buf):
    """(number, value) pairs of one message; length-delimited values stay bytes."""
    i, out = 0, []
    while i < len(buf):
        key, i = varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = varint(buf, i)
        elif wire == 2:
            n, i = varint(buf, i)
            val, i = buf[i : i + n], i + n
        elif wire == 1:
            val, i = buf[i : i + 8], i + 8
        elif wire == 5:
            val, i = buf[i : i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        out.append((num, val))
    return out


def first(fs, num, default=None):
    for n, v in fs:
        if n == num:
            return v
    return default


def text(b):
    return b.decode() if isinstance(b, bytes) else b


def facts(fdp):
    """Flatten a FileDescriptorProto into {key: description}."""
    out = {}

    def message(buf, prefix):
        fs = fields(buf)
        name = prefix + text(first(fs, 1))
        out["message " + name] = "present"
        for n, v in fs:
            if n == 2:  # field
                f = fields(v)
                fname = text(first(f, 1))
                out["field %s.%s" % (name, fname)] = "number=%s label=%s type=%s type_name=%s" % (
                    first(f, 3), first(f, 4), first(f, 5), text(first(f, 6, b"")))
            elif n == 3:  # nested message (map entries, nested types)
                message(v, name + ".")
            elif n == 4:
                enum(v, name + ".")

    def enum(buf, prefix):
        fs = fields(buf)
        name = prefix + text(first(fs, 1))
        out["enum " + name] = "present"
        for n, v in fs:
            if n == 2:
                e = fields(v)
                out["enum value %s.%s" % (name, text(first(e, 1)))] = "number=%s" % first(e, 2)

    for n, v in fields(fdp):
        if n == 4:
            message(v, "")
        elif n == 5:
            enum(v, "")
        elif n == 6:
            s = fields(v)
            sname = text(first(s, 1))
            for m, mv in s:
                if m == 2:
                    mf = fields(mv)
                    out["rpc %s.%s" % (sname, text(first(mf, 1)))] = "%s -> %s" % (
                        text(first(mf, 2)), text(first(mf, 3)))
    return out


def containerd_descriptor():
    data = open(BINARY, "rb").read()
    magic = b"\x1f\x8b\x08\x00\x00\x00\x00\x00"
    i = 0
    while True:
        i = data.find(magic, i)
        if i < 0:
            sys.exit("no runtime.v1 descriptor found in %s" % BINARY)
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[i : i + 4_000_000])
            if text(first(fields(raw), 2, b"")) == "runtime.v1":
                return raw
        except Exception:
            pass
        i += 1


def our_descriptor():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.pb")
        subprocess.run(["protoc", "-I", os.path.dirname(PROTO), "--descriptor_set_out=" + out,
                        os.path.basename(PROTO)], check=True)
        fds = open(out, "rb").read()
    return first(fields(fds), 1)


theirs = facts(containerd_descriptor())
ours = facts(our_descriptor())
bad = 0
for key, val in sorted(ours.items()):
    if key not in theirs:
        print("MISSING in containerd: %s (%s)" % (key, val))
        bad += 1
    elif theirs[key] != val:
        print("DIFFERENT %s: ours %s, containerd %s" % (key, val, theirs[key]))
        bad += 1
print("%d facts checked, %d differences" % (len(ours), bad))
sys.exit(1 if bad else 0)
