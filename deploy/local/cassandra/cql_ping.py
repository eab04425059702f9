#!/usr/bin/env python3
"""Checks that a Cassandra node answers CQL: speaks native protocol v4 to HOST:PORT
(STARTUP, then `SELECT release_version FROM system.local`) and prints the release version.

    cql_ping.py HOST PORT [TIMEOUT_SECONDS]

Exits 0 when the query returns a row, 1 otherwise (the reason on stderr). Standard library
only; no authentication (the node must not require any).
"""
import socket
import struct
import sys

VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_QUERY, OP_RESULT = 0x00, 0x01, 0x02, 0x07, 0x08
RESULT_ROWS = 0x0002
CONSISTENCY_ONE = 0x0001


def string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def frame(stream, opcode, body):
    return struct.pack(">BBhBi", VERSION, 0, stream, opcode, len(body)) + body


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        buf += chunk
    return buf


def request(sock, stream, opcode, body):
    sock.sendall(frame(stream, opcode, body))
    _, _, _, op, length = struct.unpack(">BBhBi", recv_exact(sock, 9))
    payload = recv_exact(sock, length)
    if op == OP_ERROR:
        code, msg_len = struct.unpack(">iH", payload[:6])
        raise RuntimeError(f"error 0x{code:04x}: {payload[6:6 + msg_len].decode(errors='replace')}")
    return op, payload


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self):
        n = self.take(">H")
        self.pos += n
        return self.data[self.pos - n:self.pos].decode()

    def bytes(self):
        n = self.take(">i")
        if n < 0:
            return None
        self.pos += n
        return self.data[self.pos - n:self.pos]


def release_version(rows):
    """The single text cell of a Rows result with one text column."""
    r = Reader(rows)
    if r.take(">i") != RESULT_ROWS:
        raise RuntimeError("the query did not return rows")
    flags, columns = r.take(">i"), r.take(">i")
    if flags & 0x0002:  # has_more_pages: a paging state follows
        r.bytes()
    if flags & 0x0001:  # global_tables_spec
        r.string(), r.string()
    for _ in range(columns):
        if not flags & 0x0001:
            r.string(), r.string()
        r.string()
        r.take(">H")  # the column's type: text, which has no parameters
    if r.take(">i") < 1:
        raise RuntimeError("system.local is empty")
    return r.bytes().decode()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            op, _ = request(sock, 1, OP_STARTUP, struct.pack(">H", 1) + string("CQL_VERSION") + string("3.0.0"))
            if op != OP_READY:
                raise RuntimeError(f"STARTUP answered with opcode 0x{op:02x}, not READY (authentication required?)")
            query = b"SELECT release_version FROM system.local"
            body = struct.pack(">i", len(query)) + query + struct.pack(">HB", CONSISTENCY_ONE, 0)
            op, payload = request(sock, 2, OP_QUERY, body)
            if op != OP_RESULT:
                raise RuntimeError(f"QUERY answered with opcode 0x{op:02x}, not RESULT")
            print(release_version(payload))
    except (OSError, RuntimeError, ConnectionError, struct.error, UnicodeDecodeError) as e:
        print(f"cql_ping: {host}:{port}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
