#!/usr/bin/env python3
"""Writes the seeds of fuzz_migration_stream (tests/fuzz/seeds/migration_stream/): streams of
frames a source sends, signed with the fuzz target's fixed session key (bytes 0..31), so that
mutations start from frames the channel accepts; and bare page and block batch payloads.
The frame and batch layouts are those of hv/migration_stream.h. Usage: migration_stream_seeds.py"""
import hashlib
import hmac
import json
import os
import struct

SESSION_KEY = bytes(range(32))
SOURCE = 1
OFFER, REFUSE, MEMORY_PAGES, DISK_BLOCKS, ROUND_END, DEVICE_STATE, COMPLETE, ABORT, COMMIT = (
    1, 3, 4, 5, 6, 7, 8, 10, 12)
PAGE = 4096


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def frames(messages):
    out = b""
    for sequence, (kind, payload) in enumerate(messages):
        header = struct.pack("<HHIQ", kind, SOURCE, len(payload), sequence)
        body = header + payload + struct.pack("<I", crc32c(header + payload))
        out += body + hmac.new(SESSION_KEY, body, hashlib.sha256).digest()[:16]
    return out


def page_batch(zero_pages, data_pages):
    out = struct.pack("<II", len(zero_pages), len(data_pages))
    out += b"".join(struct.pack("<Q", p) for p in zero_pages + data_pages)
    return out + b"".join(bytes([(p * 7 + i) & 0xFF for i in range(PAGE)]) for p in data_pages)


def block_batch(block_size, blocks):
    out = struct.pack("<II", block_size, len(blocks))
    out += b"".join(struct.pack("<Q", b) for b in blocks)
    return out + b"".join(bytes([(b + i) & 0xFF for i in range(block_size)]) for b in blocks)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    seeds = os.path.join(here, "seeds", "migration_stream")
    os.makedirs(seeds, exist_ok=True)
    offer = json.dumps({"vm": "web1", "memory_bytes": 1 << 20, "disk_bytes": 1 << 16}).encode()
    pages = page_batch([0, 9], [3])
    blocks = block_batch(512, [5, 1])
    outputs = {
        "full_migration": frames([
            (OFFER, offer), (MEMORY_PAGES, pages), (DISK_BLOCKS, blocks),
            (ROUND_END, struct.pack("<I", 0)), (MEMORY_PAGES, page_batch([4], [])),
            (ROUND_END, struct.pack("<I", 1)), (DEVICE_STATE, b"\x03\x00\x00\x00" * 16),
            (COMPLETE, b""), (COMMIT, b"")]),
        "abort": frames([(OFFER, offer), (ABORT, b"")]),
        "refuse": frames([(REFUSE, b"not enough memory")]),
        "page_batch": pages,
        "block_batch": blocks,
    }
    for name, data in outputs.items():
        with open(os.path.join(seeds, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
