#!/usr/bin/env python3
"""libketama's continuum, written from its C source independently of eisodos' Rust code.

Produces the golden table that `core/src/policy/ketama.rs` is tested against:

    python3 core/tests/golden/ketama.py > core/tests/golden/ketama.json

Python 3 standard library only. What it reproduces (libketama's ketama_create_continuum and
ketama_get_server, for servers listed with their "memory" as the weight):

- N servers, weights w_i, total W. Server i gets
      ks = floorf((float)w_i / (float)W * 40.0 * (float)N)
  digests, with C's arithmetic: the division in single precision, the product with the double
  40.0 and (float)N in double, then the double rounded to float (floorf's parameter), then
  floored. float32 is emulated with struct.pack('f'), which rounds to nearest.
- Digest k (0 <= k < ks) is md5("<name>-<k>"). Each 16-byte digest gives 4 points: point h is
  the little-endian u32 of bytes [4h, 4h+4).
- Points are sorted ascending. libketama's qsort leaves the order of equal points unspecified;
  here (and in eisodos) ties go to the lower server index.
- A key hashes to the little-endian u32 of the first 4 bytes of md5(key); its server owns the
  first point >= that hash, or the first point of the ring when the hash is beyond the last.
"""

import bisect
import hashlib
import json
import math
import struct
import sys


def f32(x):
    """Rounds a Python float (a C double) to the nearest C float."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def digests(weights):
    n = len(weights)
    total = sum(weights)
    out = []
    for w in weights:
        pct = f32(f32(float(w)) / f32(float(total)))
        # pct * 40.0 * (float)N: double arithmetic, left to right; floorf takes a float.
        product = pct * 40.0 * f32(float(n))
        out.append(int(math.floor(f32(product))))
    return out


def continuum(names, weights):
    points = []
    for index, (name, ks) in enumerate(zip(names, digests(weights))):
        for k in range(ks):
            digest = hashlib.md5(("%s-%d" % (name, k)).encode("utf-8")).digest()
            for h in range(4):
                (point,) = struct.unpack("<I", digest[4 * h : 4 * h + 4])
                points.append((point, index))
    points.sort()
    return points


def key_hash(key):
    (value,) = struct.unpack("<I", hashlib.md5(key).digest()[:4])
    return value


def lookup(points, values, h):
    i = bisect.bisect_left(values, h)
    if i == len(points):
        i = 0
    return points[i][1]


KEYS = (
    ["user-%d" % i for i in range(50)]
    + [
        "",
        "a",
        # 300 bytes, not one repeated character, so every md5 block differs.
        "".join("%03d" % i for i in range(100)),
        "ключ-日本語-ü",
    ]
)

CASES = [
    ("one_backend", ["backend_a"], [1]),
    ("three_equal", ["backend_a", "backend_b", "backend_c"], [1, 1, 1]),
    ("five_equal_memcached", ["10.0.1.%d:11211" % i for i in range(1, 6)], [1] * 5),
    # 1/61 as a float times 40 * 61 is 39.9999977..., which rounds to the float just below 40.
    ("sixty_one_equal", ["backend_%02d" % i for i in range(61)], [1] * 61),
    ("weights_1_2_3", ["backend_a", "backend_b", "backend_c"], [1, 2, 3]),
    ("weights_100_1_50_7", ["10.0.1.%d:11211" % i for i in range(1, 5)], [100, 1, 50, 7]),
    # backend_b's share, 1/1001 * 80, floors to 0 digests: it owns no point.
    ("zero_digests", ["backend_a", "backend_b"], [1000, 1]),
]


def main():
    cases = []
    for name, names, weights in CASES:
        points = continuum(names, weights)
        values = [p for p, _ in points]
        keys = []
        for key in KEYS:
            raw = key.encode("utf-8")
            h = key_hash(raw)
            keys.append({"key": key, "hash": h, "backend": lookup(points, values, h)})
        cases.append(
            {
                "name": name,
                "backends": [{"cluster": c, "weight": w} for c, w in zip(names, weights)],
                "digests": digests(weights),
                "points": len(points),
                "first_points": [[p, i] for p, i in points[:8]],
                "last_point": [points[-1][0], points[-1][1]],
                "keys": keys,
            }
        )
    json.dump(
        {
            "generated_by": "python3 core/tests/golden/ketama.py > core/tests/golden/ketama.json",
            "cases": cases,
        },
        sys.stdout,
        indent=1,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
