"""What an image file is, from its first bytes: JPEG (and how many colour components), or PNG."""
from __future__ import annotations

from typing import Optional

PNG_SIG = b"\x89PNG\r\n\x1a\n"
SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}    # start-of-frame markers
HEAD = 1 << 18                                         # bytes that always reach the frame header


def image_kind(data: bytes) -> Optional[str]:
    """None for a plain JPEG (1 or 3 components); else 'PNG', 'CMYK JPEG' or 'not a JPEG'.

    Walks the JPEG segments up to the frame header; `data` is the start of the file."""
    if data[:8] == PNG_SIG:
        return "PNG"
    if data[:2] != b"\xff\xd8":
        return "not a JPEG"
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None                      # lost sync: leave it to the decoder
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in SOF:
            if i + 9 < n and data[i + 9] == 4:
                return "CMYK JPEG"
            return None
        if marker in (0xD9, 0xDA):
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None
