"""What the lab's packet generators share: the Internet checksum (RFC 1071)."""

import struct


def checksum(data):
    """The one's complement of the one's complement sum of `data`'s 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
