#!/usr/bin/env python3
"""Generates profiles-jp/src/jisx0208.rs: the JIS X 0208 characters inkan
writes as themselves in Shift_JIS, EUC-JP and ISO-2022-JP responses.

A response must decode to exactly the UTF-8 resource with every strict
decoder people use, so a character is written as bytes only when all of
them agree on what those bytes are; everything else is escaped (`\\uXXXX`,
`&#xHHHH;`). This script asks the decoders themselves, cell by cell, over
the 94 x 94 JIS X 0208 cells:

    Shift_JIS    Python shift_jis and cp932, iconv SHIFT_JIS and CP932,
                 nkf -S and nkf --ic=CP932
    EUC-JP       Python euc_jp, iconv EUC-JP, nkf -E
    ISO-2022-JP  Python iso2022_jp, iconv ISO-2022-JP, nkf -J

The cells are those Python's iso2022_jp decodes (JIS X 0208 and nothing
else: no NEC row 13, no IBM extensions, no JIS X 0212, no half-width kana).
A cell gets a charset's bit when every decoder of that charset decodes its
bytes to the same single code point. The decoders disagree on a few cells
(cp932 reads 0x8160 as U+FF5E where shift_jis reads U+301C; nkf reads
1-29 as U+2014 where the others read U+2015); those lose the bit, and the
file lists them. encoding_rs (the WHATWG decoders: browsers and the gateway
itself) cannot be asked from here; profiles-jp checks the table against it
when it first loads it (charset.rs).

    scripts/gen-jisx0208.py      # needs python3, iconv (glibc) and nkf
"""
import os
import subprocess
import sys

OUT = os.path.join(os.path.dirname(__file__), "..", "profiles-jp", "src", "jisx0208.rs")

SHIFT_JIS, EUC_JP, ISO_2022_JP = 1, 2, 4
CELLS = [(row, cell) for row in range(1, 95) for cell in range(1, 95)]


def sjis(row, cell):
    lead = ((row - 1) >> 1) + (0x81 if row <= 62 else 0xC1)
    if row % 2:
        trail = cell + 0x3F if cell <= 63 else cell + 0x40
    else:
        trail = cell + 0x9E
    return bytes([lead, trail])


def euc(row, cell):
    return bytes([0xA0 + row, 0xA0 + cell])


def iso(row, cell):
    return b"\x1b$B" + bytes([0x20 + row, 0x20 + cell]) + b"\x1b(B"


def python_codec(codec):
    def decode(cells, to_bytes):
        out = []
        for row, cell in cells:
            try:
                out.append(to_bytes(row, cell).decode(codec))
            except UnicodeDecodeError:
                out.append(None)
        return out

    return codec, decode


def program(name, *argv):
    """A decoder run once over every cell, one cell a line: the cells
    are valid JIS X 0208, so a decoder that fails or loses a line fails
    the script (no -c, no guessing)."""

    def decode(cells, to_bytes):
        data = b"".join(to_bytes(row, cell) + b"\n" for row, cell in cells)
        result = subprocess.run(argv, input=data, capture_output=True, check=True)
        lines = result.stdout.decode("utf-8").split("\n")
        if len(lines) != len(cells) + 1 or lines[-1] != "":
            sys.exit("%s: %d lines for %d cells" % (name, len(lines) - 1, len(cells)))
        return lines[:-1]

    return name, decode


# Python's codecs are strict by default. nkf: -w writes UTF-8; -m0 turns off
# its MIME decoding (=?ISO-2022-JP?B?...?= in any input), which is not part of
# decoding a charset.
DECODERS = [
    (SHIFT_JIS, "Shift_JIS", sjis, [
        python_codec("shift_jis"),
        python_codec("cp932"),
        program("iconv SHIFT_JIS", "iconv", "-f", "SHIFT_JIS", "-t", "UTF-8"),
        program("iconv CP932", "iconv", "-f", "CP932", "-t", "UTF-8"),
        program("nkf -S", "nkf", "-S", "-w", "-m0"),
        program("nkf --ic=CP932", "nkf", "--ic=CP932", "-w", "-m0"),
    ]),
    (EUC_JP, "EUC-JP", euc, [
        python_codec("euc_jp"),
        program("iconv EUC-JP", "iconv", "-f", "EUC-JP", "-t", "UTF-8"),
        program("nkf -E", "nkf", "-E", "-w", "-m0"),
    ]),
    (ISO_2022_JP, "ISO-2022-JP", iso, [
        python_codec("iso2022_jp"),
        program("iconv ISO-2022-JP", "iconv", "-f", "ISO-2022-JP", "-t", "UTF-8"),
        program("nkf -J", "nkf", "-J", "-w", "-m0"),
    ]),
]


def versions():
    nkf = subprocess.run(["nkf", "--version"], capture_output=True, text=True, check=True)
    iconv = subprocess.run(["iconv", "--version"], capture_output=True, text=True, check=True)
    return "Python %d.%d.%d, %s, %s" % (
        sys.version_info[:3]
        + (iconv.stdout.splitlines()[0].strip(), nkf.stdout.splitlines()[0].strip())
    )


def main():
    # JIS X 0208 as Python's iso2022_jp has it.
    _, reference = python_codec("iso2022_jp")
    jis = [(rc, text) for rc, text in zip(CELLS, reference(CELLS, iso)) if text is not None]
    cells = [rc for rc, _ in jis]
    masks = {rc: 0 for rc in cells}
    disagreements = []
    for bit, charset, to_bytes, decoders in DECODERS:
        results = [(name, decode(cells, to_bytes)) for name, decode in decoders]
        for i, (rc, text) in enumerate(jis):
            seen = {}
            for name, decoded in results:
                seen.setdefault(decoded[i], []).append(name)
            if len(seen) == 1 and len(text) == 1 and text in seen:
                masks[rc] |= bit
            else:
                disagreements.append((charset, rc, seen))
    rows = sorted((ord(text), rc) for rc, text in jis)
    code_points = [cp for cp, _ in rows]
    if len(set(code_points)) != len(code_points):
        sys.exit("a code point sits in two cells")
    if len(rows) != 6879:
        sys.exit("JIS X 0208 has 6,879 characters, Python's iso2022_jp %d" % len(rows))

    def show(text):
        if text is None:
            return "error"
        return " ".join("U+%04X" % ord(c) for c in text) or "nothing"

    with open(OUT, "w", encoding="utf-8") as out:
        out.write("// Generated by scripts/gen-jisx0208.py. Do not edit.\n")
        out.write("// Decoders asked (the Python codecs, iconv -f CHARSET -t UTF-8, nkf -w -m0):\n")
        out.write("// %s.\n" % versions())
        out.write("//\n")
        out.write("// (code point, JIS X 0208 row, cell, charsets), sorted by code point for binary\n")
        out.write("// search: the %d characters of JIS X 0208, and in which charsets every\n" % len(rows))
        out.write("// decoder listed in the script reads the cell's bytes as exactly that code point\n")
        out.write("// (bit 1 Shift_JIS, 2 EUC-JP, 4 ISO-2022-JP). Where they disagree:\n")
        out.write("//\n")
        for charset, (row, cell), seen in disagreements:
            opinions = "; ".join("%s: %s" % (", ".join(names), show(text)) for text, names in seen.items())
            out.write("//   %s %d-%d: %s\n" % (charset, row, cell, opinions))
        out.write("\n")
        out.write("pub(crate) const SHIFT_JIS: u8 = %d;\n" % SHIFT_JIS)
        out.write("pub(crate) const EUC_JP: u8 = %d;\n" % EUC_JP)
        out.write("pub(crate) const ISO_2022_JP: u8 = %d;\n" % ISO_2022_JP)
        out.write("\n")
        out.write("pub(crate) static JIS_X_0208: &[(u16, u8, u8, u8)] = &[\n")
        for cp, (row, cell) in rows:
            out.write("    (0x%04X, %d, %d, %d),\n" % (cp, row, cell, masks[(row, cell)]))
        out.write("];\n")
    print("%d characters, %d disagreements -> %s" % (len(rows), len(disagreements), os.path.normpath(OUT)))


if __name__ == "__main__":
    main()
