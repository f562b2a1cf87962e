#!/usr/bin/env python3
"""A TCP proxy between a migration's source and destination that injects one failure.

The stream is authenticated but not encrypted, so the proxy can follow the source's frames:
after the 80-byte handshake (48-byte hello, 32-byte proof) each frame is a 16-byte header
(u16 type, u16 flags, u32 payload length, u64 sequence, little-endian), the payload and a
20-byte trailer (CRC-32C, truncated HMAC). When the first frame of type TYPE passes from the
source, the proxy acts:
  corrupt      flips one byte of that frame's payload (the destination must refuse the stream)
  cut          closes both connections (a cable pulled)
  kill:PID     kills PID with SIGKILL (the destination dies), then closes both connections
  stall        stops forwarding and holds both connections open (a dead link: only timeouts)
Usage: migration_proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT TYPE ACTION
Prints "proxy: ACTION at TYPE" on stdout when it acted; serves one connection, then exits.
"""
import os
import signal
import socket
import struct
import sys
import threading

HANDSHAKE = 80
HEADER = 16
TRAILER = 20


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def main():
    listen_port, target, want_type, action = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    host, port = target.rsplit(":", 1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(listen_port)))
    server.listen(1)
    print("proxy: listening", flush=True)
    source, _ = server.accept()
    dest = socket.create_connection((host, int(port)))
    back = threading.Thread(target=pump, args=(dest, source), daemon=True)
    back.start()
    try:
        dest.sendall(read_exact(source, HANDSHAKE))
        while True:
            header = read_exact(source, HEADER)
            ftype, _flags, length, _seq = struct.unpack("<HHIQ", header)
            body = bytearray(read_exact(source, length + TRAILER))
            if ftype == want_type:
                print(f"proxy: {action} at {ftype}", flush=True)
                if action == "corrupt":
                    body[length // 2 if length else 0] ^= 0x40
                    dest.sendall(header + bytes(body))
                    pump(source, dest)
                elif action == "stall":
                    threading.Event().wait(3600)
                else:
                    if action.startswith("kill:"):
                        os.kill(int(action[5:]), signal.SIGKILL)
                    source.close()
                    dest.close()
                return
            dest.sendall(header + bytes(body))
    except (EOFError, OSError):
        pass


if __name__ == "__main__":
    main()
