"""Just enough of flexmon's wire format (schemas/wire.proto) to forge result
datagrams and read acks in the fault tests and to seed the fuzz corpus:
protobuf fields encoded by hand, HMAC-SHA256 seals."""

import hashlib
import hmac


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def field_varint(number, v):
    return varint(number << 3) + varint(v)


def field_bytes(number, b):
    if isinstance(b, str):
        b = b.encode()
    return varint((number << 3) | 2) + varint(len(b)) + b


def result(seq, node, stream="s", dst="n2", start_ns=1_700_000_000_000_000_000, status=1):
    return (field_varint(1, seq) + field_bytes(2, stream) + field_bytes(3, "latency") +
            field_bytes(4, node) + field_bytes(5, dst) + field_varint(6, start_ns) +
            field_varint(7, status))


def results_message(node, epoch, results):
    batch = field_varint(1, epoch) + b"".join(field_bytes(2, r) for r in results)
    return field_bytes(1, node) + field_bytes(20, batch)


WIRE_VERSION = 2  # Sealed.key_id came with version 2


def seal(node, key, body, key_id=1):
    """A Sealed frame of `node` under its key `key_id` (1: a node's single `key`)."""
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return (field_varint(1, WIRE_VERSION) + field_bytes(2, node) + field_bytes(3, body) +
            field_bytes(4, mac) + field_varint(5, key_id))


def parse(data):
    """Fields of one protobuf message: {number: [value, ...]} (varint or bytes)."""
    fields, i = {}, 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, i = _read_varint(data, i)
        elif kind == 2:
            length, i = _read_varint(data, i)
            value, i = data[i:i + length], i + length
        else:
            raise ValueError("unsupported wire type")
        fields.setdefault(number, []).append(value)
    return fields


def _read_varint(data, i):
    shift = v = 0
    while True:
        b = data[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7
