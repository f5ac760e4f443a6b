"""Sparkplug B payloads: metric datatypes and the protobuf encoding (Tahu's sparkplug_b.proto).

Kept free of MQTT and of session state so the encoding is unit-tested on its own; the session
rules (seq, bdSeq, aliases, births) live in :mod:`edged.sparkplug.node`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from edged.sparkplug import sparkplug_b_pb2 as pb

NAMESPACE = "spBv1.0"

# DataType numbers of sparkplug_b.proto (the subset edged publishes)
INT32 = int(pb.Int32)
INT64 = int(pb.Int64)
UINT32 = int(pb.UInt32)
UINT64 = int(pb.UInt64)
FLOAT = int(pb.Float)
DOUBLE = int(pb.Double)
BOOLEAN = int(pb.Boolean)
STRING = int(pb.String)

_INT_FIELD = {pb.Int8, pb.Int16, pb.Int32, pb.UInt8, pb.UInt16, pb.UInt32}
_LONG_FIELD = {pb.Int64, pb.UInt64, pb.DateTime}


def now_ms() -> int:
    """Current Unix time in milliseconds (Sparkplug timestamps are UTC epoch ms)."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Value:
    """One metric value to encode; ``name`` is sent in births only, ``alias`` always."""

    name: str
    alias: int | None  # None: no alias (bdSeq, which hosts look up by name)
    datatype: int
    value: Any
    timestamp: int | None = None
    historical: bool = False


def _set_value(m: pb.Payload.Metric, datatype: int, value: Any) -> None:
    if value is None:
        m.is_null = True
    elif datatype in _INT_FIELD:
        # signed types are carried in the unsigned field as two's complement (spec 6.4.16)
        m.int_value = int(value) & 0xFFFFFFFF
    elif datatype in _LONG_FIELD:
        m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif datatype == pb.Float:
        m.float_value = float(value)
    elif datatype == pb.Double:
        m.double_value = float(value)
    elif datatype == pb.Boolean:
        m.boolean_value = bool(value)
    elif datatype in (pb.String, pb.Text, pb.UUID):
        m.string_value = str(value)
    else:
        raise ValueError(f"datatype {datatype} is not supported by edged's encoder")


def encode(values: list[Value], *, seq: int | None, birth: bool, timestamp: int | None = None) -> bytes:
    """One Sparkplug payload. ``birth``: metrics carry name, alias and datatype; otherwise only the
    alias (names and datatypes are known from the birth). ``seq`` None: no seq (NDEATH)."""
    p = pb.Payload()
    p.timestamp = now_ms() if timestamp is None else timestamp
    if seq is not None:
        p.seq = seq
    for v in values:
        m = p.metrics.add()
        if birth:
            m.name = v.name
            m.datatype = v.datatype
        if v.alias is not None:
            m.alias = v.alias
        m.timestamp = p.timestamp if v.timestamp is None else v.timestamp
        if v.historical:
            m.is_historical = True
        _set_value(m, v.datatype, v.value)
    return p.SerializeToString()


def decode(payload: bytes | bytearray) -> pb.Payload:
    """Parse a payload (NCMD from a host)."""
    p = pb.Payload()
    p.ParseFromString(payload)
    return p


def metric_value(m: pb.Payload.Metric) -> Any:
    """The value of a decoded metric, whichever field carries it."""
    which = m.WhichOneof("value")
    return None if which is None else getattr(m, which)


def topic(group: str, verb: str, node: str, device: str | None = None) -> str:
    """``spBv1.0/<group>/<verb>/<node>[/<device>]``."""
    t = f"{NAMESPACE}/{group}/{verb}/{node}"
    return t if device is None else f"{t}/{device}"
