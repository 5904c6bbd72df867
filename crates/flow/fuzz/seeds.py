#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora from the vendor fixtures.

    seeds.py FIXTURE_DIR OUT_DIR

OUT_DIR/<target>/ gets one file per seed, in the target's input format
(see fuzz_targets/common.rs and fuzz_targets/stateful.rs): fixture files
split into single datagrams, each exporter's datagrams in wire order
(templates first), plus two sFlow v5 datagrams built from the spec (there
are no sFlow fixtures).
"""

import os
import struct
import sys

MARKERS = ("tpl", "opttpl", "tpls", "data", "dpi")


def exporter_prefix(name):
    # As crates/flow/tests/common/mod.rs: the name up to the token saying
    # what the file holds.
    tokens = name[: -len(".dat")].split("_")
    for i, t in enumerate(tokens[1:], 1):
        if t.startswith(MARKERS):
            return "_".join(tokens[:i])
    return "_".join(tokens)


def split_datagrams(b):
    # v5 and IPFIX headers give the length; v9 files are one datagram.
    out = []
    while b:
        version = struct.unpack(">H", b[:2])[0] if len(b) >= 4 else 0
        field = struct.unpack(">H", b[2:4])[0] if len(b) >= 4 else 0
        n = len(b)
        if version == 5 and 1 <= field <= 30 and 24 + field * 48 <= len(b):
            n = 24 + field * 48
        elif version == 10 and 16 <= field <= len(b):
            n = field
        out.append(b[:n])
        b = b[n:]
    return out


def xdr_opaque(data):
    return struct.pack(">I", len(data)) + data + b"\0" * (-len(data) % 4)


def sflow_datagrams():
    ip = bytes([0x45, 0, 5, 0xDC, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 1, 10, 2, 0, 2])
    tcp = struct.pack(">HH", 51000, 5432) + b"\0" * 8 + bytes([0x50, 0x18]) + b"\0" * 6
    frame = bytes(range(12)) + struct.pack(">H", 0x0800) + ip + tcp
    header = struct.pack(">III", 1, 1518, 4) + xdr_opaque(frame)
    sample = struct.pack(">IIIIIIII", 7, 3, 512, 5120, 0, 3, 7, 1)
    sample += struct.pack(">I", 1) + xdr_opaque(header)
    # Generic interface counters (counter record 1): 88 bytes.
    ifc = struct.pack(">IIQIIQ6IQ6I", 3, 6, 10**9, 1, 3, 10**6, 100, 2, 1, 0, 0, 0, 2 * 10**6, 200, 3, 2, 0, 0, 0)
    csample = struct.pack(">III", 8, 3, 1) + struct.pack(">I", 1) + xdr_opaque(ifc)

    def datagram(seq, samples):
        d = struct.pack(">II", 5, 1) + bytes([192, 0, 2, 10]) + struct.pack(">IIII", 0, seq, 123456, len(samples))
        for fmt, body in samples:
            d += struct.pack(">I", fmt) + xdr_opaque(body)
        return d

    return [datagram(42, [(1, sample)]), datagram(43, [(1, sample), (2, csample)])]


def main():
    fixtures, out = sys.argv[1], sys.argv[2]
    names = sorted(n for n in os.listdir(fixtures) if n.endswith(".dat"))
    if len(names) < 50:
        sys.exit(f"seeds: expected the netflow fixtures in {fixtures}")
    groups = {}
    for n in names:
        groups.setdefault(exporter_prefix(n), []).append(n)
    heads = {5: b"\0\x05", 9: b"\0\x09", 10: b"\0\x0a", 0: b"\0\0\0\x05"}
    targets = {5: "netflow_v5", 9: "netflow_v9", 10: "ipfix", 0: "sflow"}
    seeds = {t: [] for t in list(targets.values()) + ["stateful"]}
    stateful_all = b""
    streams = [(prefix, files) for prefix, files in sorted(groups.items())]
    streams.append(("sflow", None))
    for g, (prefix, files) in enumerate(streams):
        if files is None:
            datagrams = sflow_datagrams()
        else:
            files.sort(key=lambda n: ("tpl" not in n, n))
            datagrams = []
            for f in files:
                with open(os.path.join(fixtures, f), "rb") as fh:
                    datagrams += split_datagrams(fh.read())
        by_version = {}
        for d in datagrams:
            v = struct.unpack(">H", d[:2])[0] if len(d) >= 2 else -1
            if v == 0 and d[:4] != heads[0]:
                v = -1
            by_version.setdefault(v, []).append(d)
        for v, ds in by_version.items():
            if v not in heads:
                continue
            head = heads[v]
            body = lambda d: struct.pack(">H", len(d) - len(head)) + d[len(head):]
            # The exporter's whole stream, and each datagram alone.
            seeds[targets[v]].append(b"".join(body(d) for d in ds))
            seeds[targets[v]] += [body(d) for d in ds]
        # Stateful: the exporter's stream from exporter slot g % 8, the clock
        # moving 1 ms per datagram; and every exporter's stream, interleaved.
        control = (g % 8) | (1 << 3)
        chunks = [bytes([control]) + struct.pack(">H", len(d)) + d for d in datagrams]
        seeds["stateful"].append(b"".join(chunks))
        stateful_all += b"".join(chunks)
    seeds["stateful"].append(stateful_all)
    for target, items in seeds.items():
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        for i, s in enumerate(items):
            with open(os.path.join(d, f"seed-{i:03}"), "wb") as fh:
                fh.write(s)
    print(" ".join(f"{t}: {len(v)}" for t, v in seeds.items()))


if __name__ == "__main__":
    main()
