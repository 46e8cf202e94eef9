#!/usr/bin/env python3
"""Pixel statistics of a PNG screenshot, standard library only (the report tests check
that a page a browser rendered is not blank and that the plots' colours are on it).

usage: png-stats.py FILE [#rrggbb ...]
prints JSON: width, height, the share of pixels that are not near-white, and for each
colour given the number of pixels within a small distance of it."""
import json
import struct
import sys
import zlib


def read_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path}: not a PNG file")
    pos, idat, width, height, ctype, depth, interlace = 8, b"", 0, 0, 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise SystemExit(f"{path}: only 8-bit RGB/RGBA non-interlaced PNGs are read (depth {depth}, type {ctype})")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        f = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return width, height, bpp, rows


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    width, height, bpp, rows = read_png(sys.argv[1])
    wanted = [tuple(int(h.lstrip("#")[k:k + 2], 16) for k in (0, 2, 4)) for h in sys.argv[2:]]
    counts = [0] * len(wanted)
    inked = 0
    for line in rows:
        for x in range(0, width * bpp, bpp):
            r, g, b = line[x], line[x + 1], line[x + 2]
            if r < 235 or g < 235 or b < 235:
                inked += 1
            for j, (wr, wg, wb) in enumerate(wanted):
                if abs(r - wr) + abs(g - wg) + abs(b - wb) <= 24:
                    counts[j] += 1
    print(json.dumps({"width": width, "height": height, "inked_share": inked / (width * height),
                      "colours": dict(zip(sys.argv[2:], counts))}))


if __name__ == "__main__":
    main()
