"""Checkpoints: the monitors' whole state and the Kafka positions it corresponds to,
in a versioned format that is read without executing anything it contains.

Layout (all integers big-endian)::

    MAGIC            b"DRIFTCKPT2\\n": the format's name and FORMAT_VERSION
    header length    4 bytes
    header           msgpack map: fingerprint, created, events, offsets
                     ([topic, partition, offset], ...), payload_bytes, sha256 (of the
                     payload), signed
    signature        32 bytes, only when the header says ``signed``: HMAC-SHA256 under
                     the key of everything before it (the header holds the payload's
                     SHA-256, so the signature covers the payload too)
    checksum         32 bytes: SHA-256 of everything before it
    payload          msgpack: [class table, state]

The state is written by walking its object graph: JSON-like values as themselves,
everything else as a one-entry map whose key is an integer tag (``Tag``), which no
plain map can have (their keys are strings). Containers are numbered in the order
they are written; an object met again is written as a reference to its number, so
shared objects and cycles come back shared. Objects are written as their class (an
index in the class table, which names each class once with its fields) and their
field values; numpy arrays as dtype, shape and raw bytes; settings objects as their
values, re-validated by their pydantic class on load.

Loading instantiates only the classes of ``ALLOWED`` (those real states hold:
``tests/unit/test_state_format.py`` walks them), with ``object.__new__`` and the
fields set directly (``tuple.__new__`` for named tuples, River's own ``__setstate__``
for its two compiled classes), never a constructor or anything named by the blob.
Anything else is refused with a reason (``CheckpointError.reason``, one of
``REASONS``).

>>> blob = encode({"models": {}, "counts": (1, 2)}, {("predictions", 0): 42}, "abc",
...               events=7, key=b"k" * 32)
>>> ckpt = decode(blob, "abc", key=b"k" * 32)
>>> ckpt.state, ckpt.offsets, ckpt.events
({'models': {}, 'counts': (1, 2)}, {('predictions', 0): 42}, 7)
>>> try:
...     decode(blob, "abc", key=b"another key, 32 bytes long......")
... except CheckpointError as exc:
...     print(exc.reason, "-", exc)
signature - checkpoint: signature does not match: written with another key, or altered
"""

from __future__ import annotations

import array
import enum
import functools
import gc
import hashlib
import hmac
import json
import math
import random
import struct
import time
import types
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import pydantic

from detector import (
    __version__,
    calibrate_scores,
    config,
    data_quality,
    detectors,
    estimation,
    join,
    monitor,
    performance,
    pipeline,
    records,
    reference,
    trace,
)
from detector.detectors import CUSUM, Jump, Standardizer
from detector.errors import DriftDetectorError
from detector.formats.bodies import Half
from detector.kernels import adwin, cusum, jump, page_hinkley, standardize
from detector.kernels import stream as stream_kernel

FORMAT_VERSION = 2
MAGIC = b"DRIFTCKPT%d\n" % FORMAT_VERSION
_FAMILY = b"DRIFTCKPT"       # every format's magic starts so (1: the pickle of 0.1)

#: Why a checkpoint cannot be used (``CheckpointError.reason``).
REASONS = (
    "truncated",         # shorter than its header says (a half-written or cut blob)
    "not_a_checkpoint",  # no drift-detector magic
    "version",           # another format version (1: the pickle format, never unpickled)
    "too_large",         # a header or payload beyond the bounds, or nesting too deep
    "malformed",         # the header or payload does not decode to a valid state
    "unsigned",          # a key is configured but the checkpoint is not signed
    "signature",         # signed, but not with this key (or altered)
    "checksum",          # the header or the payload does not match its SHA-256
    "settings",          # written for other settings or another build (fingerprint)
    "unknown_type",      # names a class this build does not load
)

#: Bounds that keep a hostile blob cheap: nesting depth of the state, header size,
#: payload size, classes and fields in the class table, dimensions of an array.
MAX_DEPTH = 64
MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 1 << 31
MAX_CLASSES = 4096
MAX_FIELDS = 256
MAX_NDIM = 8

Offsets = dict[tuple[str, int], int]


class CheckpointError(DriftDetectorError):
    """A checkpoint cannot be used: ``reason`` (one of ``REASONS``) says why, ``detail``
    how; ``str()`` is the detail with where the checkpoint was."""

    def __init__(self, reason: str, detail: str, where: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown checkpoint error reason {reason!r}")
        self.reason, self.detail, self.where = reason, detail, where
        super().__init__(f"checkpoint{' ' + where if where else ''}: {detail}")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back: the state, the positions it corresponds to (the next
    offset to read of each topic partition), when it was written and how many messages
    the service had applied."""

    state: Any
    offsets: Offsets
    created: float
    events: int


def fingerprint(settings_view: dict[str, Any]) -> str:
    """A digest of the settings that shape the state; another digest means the saved
    state does not fit this configuration."""
    blob = json.dumps({"version": __version__, **settings_view}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _Header(msgspec.Struct):
    fingerprint: str
    created: float
    events: int
    offsets: list[tuple[str, int, int]]
    payload_bytes: int
    sha256: bytes
    signed: bool


_HEADER = msgspec.msgpack.Decoder(_Header)
_LENGTH = struct.Struct(">I")


def encode(state: Any, offsets: Offsets, fingerprint: str, events: int = 0,
           key: bytes | None = None) -> bytes:
    """The checkpoint of ``state`` at ``offsets`` (call it while the state cannot change),
    signed when ``key`` is given.

    Raises ``TypeError`` naming the path to a value of a class the format does not
    hold (a new class in the state must be added to ``ALLOWED``)."""
    with _gc_paused():
        payload = _Writer().payload(state)
    return seal(payload, offsets, fingerprint, events, key)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic collection while a state's objects are written or built: each would
    scan every container made so far, for nothing (none of them is garbage)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def seal(payload: bytes, offsets: Offsets, fingerprint: str, events: int = 0,
         key: bytes | None = None) -> bytes:
    """The envelope around an encoded ``payload``: magic, header, signature (with a
    ``key``), checksum."""
    header = msgspec.msgpack.encode(_Header(
        fingerprint=fingerprint, created=time.time(), events=events,
        offsets=[(t, p, o) for (t, p), o in sorted(offsets.items())],
        payload_bytes=len(payload), sha256=hashlib.sha256(payload).digest(),
        signed=key is not None))
    head = MAGIC + _LENGTH.pack(len(header)) + header
    if key is not None:
        head += hmac.new(key, head, hashlib.sha256).digest()
    return b"".join((head, hashlib.sha256(head).digest(), payload))


def decode(blob: bytes, fingerprint: str, key: bytes | None = None,
           where: str = "") -> Checkpoint:
    """Check and read a checkpoint; raises ``CheckpointError`` with the reason it cannot
    be used. With a ``key``, an unsigned or foreign checkpoint is refused; without
    one, a signed checkpoint is accepted on its checksums."""
    def fail(reason: str, detail: str) -> CheckpointError:
        return CheckpointError(reason, detail, where)

    blob = bytes(blob)
    if not blob.startswith(MAGIC):
        _refuse_magic(blob, fail)
    at = len(MAGIC) + _LENGTH.size
    if len(blob) < at:
        raise fail("truncated", "truncated in its header")
    (length,) = _LENGTH.unpack_from(blob, len(MAGIC))
    if length > MAX_HEADER_BYTES:
        raise fail("too_large", f"header of {length} bytes (at most {MAX_HEADER_BYTES})")
    at += length
    if len(blob) < at:
        raise fail("truncated", "truncated in its header")
    try:
        header = _HEADER.decode(blob[len(MAGIC) + _LENGTH.size:at])
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
        raise fail("malformed", f"header: {exc}") from None
    signature = blob[at:at + 32] if header.signed else b""
    at += len(signature)
    if len(blob) < at + 32:
        raise fail("truncated", "truncated in its header")
    if not hmac.compare_digest(hashlib.sha256(blob[:at]).digest(), blob[at:at + 32]):
        raise fail("checksum", "the header does not match its SHA-256: altered or damaged")
    if key is not None:
        if not header.signed:
            raise fail("unsigned", "not signed, and checkpoint.key is set")
        if not hmac.compare_digest(signature, hmac.new(key, blob[:at - 32],
                                                       hashlib.sha256).digest()):
            raise fail("signature", "signature does not match: written with another key, "
                                    "or altered")
    at += 32
    if not 0 <= header.payload_bytes <= MAX_PAYLOAD_BYTES:
        raise fail("too_large", f"payload of {header.payload_bytes} bytes")
    if len(blob) != at + header.payload_bytes:
        raise fail("truncated" if len(blob) < at + header.payload_bytes else "malformed",
                   f"{len(blob)} bytes, the header says {at + header.payload_bytes}")
    payload = memoryview(blob)[at:]
    if not hmac.compare_digest(hashlib.sha256(payload).digest(), header.sha256):
        raise fail("checksum", "the payload does not match its SHA-256: altered or damaged")
    if header.fingerprint != fingerprint:
        raise fail("settings", "written for other settings or another version "
                               "(detectors, detection, reference, join, models)")
    try:
        with _gc_paused():
            state = _Reader().state(payload)
    except _Refused as exc:
        raise fail(exc.reason, exc.detail) from None
    return Checkpoint(state, {(t, p): o for t, p, o in header.offsets}, header.created,
                      header.events)


def _refuse_magic(blob: bytes, fail: Callable[[str, str], CheckpointError]) -> None:
    """Raise the reason a blob without our magic is refused."""
    if MAGIC.startswith(blob):
        raise fail("truncated", "truncated in its header")
    end = blob.find(b"\n", len(_FAMILY), len(_FAMILY) + 8)
    version = blob[len(_FAMILY):end]
    if blob.startswith(_FAMILY) and end > 0 and version.isdigit():
        if int(version) == 1:
            raise fail("version", "format 1 (the pickle of drift-detector 0.1): never "
                                  "unpickled; ignored (the service starts fresh, or exits "
                                  "with checkpoint.on_invalid: refuse)")
        raise fail("version", f"format {int(version)}; this build reads format "
                              f"{FORMAT_VERSION} only")
    raise fail("not_a_checkpoint", "not a drift-detector checkpoint")


class Tag(enum.IntEnum):
    """The integer key of a tagged value (a one-entry map ``{tag: body}``)."""

    REF = 0           # n: the n-th container written
    TUPLE = 1         # [items]
    SET = 2           # [items]
    FROZENSET = 3     # [items]
    DICT = 4          # [k, v, k, v, ...]: a dict with a key that is not a string
    COUNTER = 5       # [k, v, ...]
    ORDERED = 6       # [k, v, ...]: an OrderedDict
    DEQUE = 7         # [maxlen or None, items]
    BIGINT = 8        # decimal string: an int beyond 64 bits
    BYTEARRAY = 9     # bytes
    NDARRAY = 10      # [dtype, shape, raw bytes (C order)]
    SCALAR = 11       # [dtype, raw bytes]: a numpy scalar
    NAMEDTUPLE = 12   # [class, items]
    OBJECT = 13       # [class, field values in the class table's order]
    SETTINGS = 14     # [class, model_dump(mode="json")]: a pydantic settings object
    METHOD = 15       # [class, name, object]: a bound method of an allowed object
    RANDOM = 16       # random.Random.getstate(): [version, [625 ints], gauss_next]
    NATIVE = 17       # [class, [constructor numbers], state bytes]: River's Rust classes
    ARRAY = 18        # [typecode, raw bytes]: an array.array of numbers


#: The classes a checkpoint may hold, by the name written in it: what the states of
#: both engines hold with every detector a configuration can name, profiles, estimation,
#: data quality and the inputs' join (see tests/unit/test_state_format.py).
ALLOWED: dict[str, type] = {f"{c.__module__}.{c.__qualname__}": c for c in (
    pipeline.ModelState, monitor.ModelMonitor, monitor.Stream, monitor.Channel,
    monitor.KernelChannel, monitor.ReferenceStream, monitor.DistanceChannel, monitor.Schema,
    CUSUM, Jump, Standardizer, stream_kernel.StreamState, adwin.AdwinState,
    cusum.CusumState, jump.JumpState, page_hinkley.PageHinkleyState, standardize.StandardizerState,
    reference.NumericReference, reference.CategoricalReference,
    reference.Profile, performance.Performance,
    estimation.Estimator, estimation.Windows, calibrate_scores.Calibrator,
    calibrate_scores.LossTable, data_quality.VersionQuality, data_quality.FeatureQuality,
    data_quality.Expectation, join.JoinBuffer, join.Dropped, records.Record, Half,
    config.DetectorSpec, config.DetectorSets, config.DetectionSettings,
    config.ReferenceSettings, trace.EventTrail, trace.StreamTrail, trace.ValueMap,
    *detectors.STATE_CLASSES, random.Random)}
_NAMES = {c: name for name, c in ALLOWED.items()}
_NATIVE = detectors.COMPILED_STATE
#: bound methods objects keep of themselves or of their owner
_METHODS = {**detectors.STATE_METHODS, monitor.ModelMonitor: frozenset({"_stream"})}
#: checks of a rebuilt object the compiled code trusts (it does not check bounds)
_CHECKS: dict[type, Callable[[Any], Any]] = {
    stream_kernel.StreamState: lambda s: stream_kernel.from_arrays(stream_kernel.to_arrays(s))}
_DTYPES = {np.dtype(t).str: np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
    np.uint64, np.float32, np.float64)}
_TYPECODES = frozenset("bBhHiIlLqQfd")
_PLAIN = (str, bytes, bool, float, type(None))
_INT64 = (-(1 << 63), 1 << 64)


def _slots(cls: type) -> tuple[str, ...]:
    """The slots of ``cls`` and its bases (the fields an instance without a ``__dict__``
    can have)."""
    names: list[str] = []
    for c in reversed(cls.__mro__):
        declared = c.__dict__.get("__slots__", ())
        for name in (declared,) if isinstance(declared, str) else declared:
            if name not in ("__dict__", "__weakref__") and name not in names:
                names.append(name)
    return tuple(names)


_SLOTS = {cls: _slots(cls) for cls in ALLOWED.values()}
#: values an object computes again when first needed (``functools.cached_property``):
#: not written, as pickling them is not (``NumericReference.__getstate__``)
_CACHED = {cls: frozenset(name for c in cls.__mro__ for name, v in vars(c).items()
                          if isinstance(v, functools.cached_property))
           for cls in ALLOWED.values()}


class _Writer:
    """Turns a state into msgpack-ready values (see the module docstring)."""

    def __init__(self) -> None:
        self.numbers: dict[int, int] = {}
        self.open: set[int] = set()          # tuples being written (no cycle through one)
        self.classes: dict[tuple[type, tuple[str, ...]], int] = {}
        self.table: list[list[Any]] = []

    def payload(self, state: Any) -> bytes:
        root = self.value(state, "state")
        return msgspec.msgpack.encode([self.table, root])

    def klass(self, cls: type, fields: tuple[str, ...] = ()) -> int:
        index = self.classes.get((cls, fields))
        if index is None:
            index = self.classes[(cls, fields)] = len(self.table)
            self.table.append([_NAMES[cls], list(fields)])
        return index

    def value(self, o: Any, path: str) -> Any:
        t = type(o)
        if t in _PLAIN:
            return o
        if t is int:
            return o if _INT64[0] <= o < _INT64[1] else {Tag.BIGINT: str(o)}
        if isinstance(o, np.generic):
            return {Tag.SCALAR: [self.dtype(o.dtype, path), o.tobytes()]}
        if t is types.MethodType:
            owner = type(o.__self__)
            if o.__func__.__name__ not in _METHODS.get(owner, ()):
                raise TypeError(f"{path}: bound method {o!r} is not allowed in a checkpoint")
            return {Tag.METHOD: [self.klass(owner), o.__func__.__name__,
                                 self.value(o.__self__, path + ".__self__")]}
        number = self.numbers.get(id(o))
        if number is not None:
            if id(o) in self.open:
                raise TypeError(f"{path}: a cycle through a tuple cannot be restored")
            return {Tag.REF: number}
        self.numbers[id(o)] = len(self.numbers)
        if t is list:
            return [self.value(x, f"{path}[{i}]") for i, x in enumerate(o)]
        if t is dict and all(type(k) is str for k in o):
            return {k: self.value(v, f"{path}[{k!r}]") for k, v in o.items()}
        if t in (dict, Counter, OrderedDict):
            tag = Tag.DICT if t is dict else Tag.COUNTER if t is Counter else Tag.ORDERED
            return {tag: [self.value(x, f"{path}[{k!r}]") for k, v in o.items()
                          for x in (k, v)]}
        if t is np.ndarray:
            return {Tag.NDARRAY: [self.dtype(o.dtype, path), list(o.shape),
                                  np.ascontiguousarray(o).tobytes()]}
        if t in (set, frozenset):   # sorted when it can be: the same set, the same bytes
            try:
                items = sorted(o)
            except TypeError:
                items = list(o)
            return {Tag.SET if t is set else Tag.FROZENSET: [
                self.value(x, f"{path}{{}}") for x in items]}
        if t is deque:
            return {Tag.DEQUE: [o.maxlen, [self.value(x, f"{path}[{i}]")
                                           for i, x in enumerate(o)]]}
        if t is bytearray:
            return {Tag.BYTEARRAY: bytes(o)}
        if t is array.array and o.typecode in _TYPECODES:
            return {Tag.ARRAY: [o.typecode, o.tobytes()]}
        if t is tuple or t in _NAMES and issubclass(t, tuple):
            self.open.add(id(o))
            items = [self.value(x, f"{path}[{i}]") for i, x in enumerate(o)]
            self.open.discard(id(o))
            return {Tag.TUPLE: items} if t is tuple else {Tag.NAMEDTUPLE: [self.klass(t), items]}
        if t not in _NAMES:
            raise TypeError(f"{path}: {t.__module__}.{t.__qualname__} is not allowed in a "
                            "checkpoint (add it to detector.state.ALLOWED)")
        if issubclass(t, pydantic.BaseModel):
            return {Tag.SETTINGS: [self.klass(t), o.model_dump(mode="json")]}
        if t is random.Random:
            version, words, gauss = o.getstate()
            return {Tag.RANDOM: [version, list(words), gauss]}
        if t in _NATIVE:
            return {Tag.NATIVE: [self.klass(t), list(o.__getnewargs__()), o.__getstate__()]}
        fields = {name: getattr(o, name) for name in _SLOTS[t] if hasattr(o, name)}
        fields.update(getattr(o, "__dict__", {}))
        for name in _CACHED[t].intersection(fields):
            del fields[name]
        return {Tag.OBJECT: [self.klass(t, tuple(fields)),
                             *(self.value(v, f"{path}.{k}") for k, v in fields.items())]}

    @staticmethod
    def dtype(dtype: np.dtype, path: str) -> str:
        if dtype.str not in _DTYPES:
            raise TypeError(f"{path}: numpy dtype {dtype} is not allowed in a checkpoint")
        return dtype.str


class _Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _bad(detail: str) -> _Refused:
    return _Refused("malformed", detail)


_PENDING = object()   # the number of a tuple being read (a reference to it is refused)


class _Reader:
    """Rebuilds a state from a payload; raises ``_Refused`` with the reason it cannot.

    Each tag has its reader, ``(body, depth) -> value``; containers are numbered in
    the order they are met, as the writer numbered them."""

    def __init__(self) -> None:
        self.numbered: list[Any] = []
        self.table: list[tuple[type, tuple[str, ...]]] = []
        self.readers: dict[int, Callable[[Any, int], Any]] = {
            Tag.REF: self.ref, Tag.TUPLE: self.tuple, Tag.SET: self.set,
            Tag.FROZENSET: self.frozenset, Tag.DICT: self.mapping(dict),
            Tag.COUNTER: self.mapping(Counter), Tag.ORDERED: self.mapping(OrderedDict),
            Tag.DEQUE: self.deque, Tag.BIGINT: self.bigint, Tag.BYTEARRAY: self.bytearray,
            Tag.NDARRAY: self.ndarray, Tag.SCALAR: self.scalar,
            Tag.NAMEDTUPLE: self.namedtuple, Tag.OBJECT: self.object,
            Tag.SETTINGS: self.settings, Tag.METHOD: self.method, Tag.RANDOM: self.random,
            Tag.NATIVE: self.native, Tag.ARRAY: self.array}

    def state(self, payload: memoryview) -> Any:
        try:
            top = msgspec.msgpack.decode(payload)
        except RecursionError:
            raise _Refused("too_large", f"nested deeper than {MAX_DEPTH}") from None
        except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
            raise _bad(f"payload: {exc}") from None
        if type(top) is not list or len(top) != 2 or type(top[0]) is not list:
            raise _bad("payload is not [class table, state]")
        self.read_table(top[0])
        try:
            return self.value(top[1], 0)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError,
                AttributeError) as exc:   # a value of the wrong type or shape somewhere
            raise _bad(f"payload: {type(exc).__name__}: {str(exc)[:200]}") from None

    def read_table(self, table: list[Any]) -> None:
        if len(table) > MAX_CLASSES:
            raise _Refused("too_large", f"{len(table)} classes (at most {MAX_CLASSES})")
        for entry in table:
            if (type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str
                    or type(entry[1]) is not list):
                raise _bad("class table entry is not [name, fields]")
            name, fields = entry
            cls = ALLOWED.get(name)
            if cls is None:
                raise _Refused("unknown_type", f"class {name[:100]!r} is not one a "
                                               "checkpoint may hold")
            if (len(fields) > MAX_FIELDS or any(type(f) is not str for f in fields)
                    or len(set(fields)) != len(fields)):
                raise _bad(f"{name}: too many or repeated fields")
            slots, free = _SLOTS[cls], cls.__dictoffset__ != 0   # instances have a __dict__
            for f in fields:
                if not (f in slots or free and f.isidentifier() and not f.startswith("__")):
                    raise _bad(f"{name}: no field {str(f)[:60]!r}")
            self.table.append((cls, tuple(fields)))

    def klass(self, index: Any, kind: Callable[[type], bool], what: str
              ) -> tuple[type, tuple[str, ...]]:
        if type(index) is not int or not 0 <= index < len(self.table):
            raise _bad(f"{what}: class index {index!r} out of range")
        cls, fields = self.table[index]
        if not kind(cls):
            raise _Refused("unknown_type", f"{_NAMES[cls]} is not a {what}")
        return cls, fields

    def number(self, o: Any) -> Any:
        self.numbered.append(o)
        return o

    def value(self, node: Any, depth: int) -> Any:
        t = type(node)
        if t in _PLAIN or t is int:
            return node
        if depth >= MAX_DEPTH:
            raise _Refused("too_large", f"nested deeper than {MAX_DEPTH}")
        depth += 1
        if t is list:   # msgspec's own list and dict are kept: filled in place
            self.number(node)
            for i, x in enumerate(node):
                if type(x) not in _PLAIN:
                    node[i] = self.value(x, depth)
            return node
        if len(node) != 1 or type(next(iter(node))) is str:
            self.number(node)
            for k, v in node.items():
                if type(k) is not str:
                    raise _bad("a map with a key that is not a string")
                if type(v) not in _PLAIN:
                    node[k] = self.value(v, depth)
            return node
        ((tag, body),) = node.items()
        reader = self.readers.get(tag) if type(tag) is int else None
        if reader is None:
            raise _Refused("unknown_type", f"tag {str(tag)[:20]!r}")
        return reader(body, depth)

    def items(self, body: Any, depth: int) -> list[Any]:
        if type(body) is not list:
            raise _bad("a sequence is not a list")
        return [x if type(x) in _PLAIN else self.value(x, depth) for x in body]

    def ref(self, body: Any, depth: int) -> Any:
        if type(body) is not int or not 0 <= body < len(self.numbered):
            raise _bad(f"reference {body!r} to nothing written before it")
        target = self.numbered[body]
        if target is _PENDING:
            raise _bad("reference to a tuple from inside itself")
        return target

    def immutable(self, build: Callable[[], Any]) -> Any:
        """A tuple or frozenset: numbered before its items are read, built after."""
        at = len(self.numbered)
        self.numbered.append(_PENDING)
        self.numbered[at] = out = build()
        return out

    def tuple(self, body: Any, depth: int) -> tuple:
        return self.immutable(lambda: tuple(self.items(body, depth)))

    def frozenset(self, body: Any, depth: int) -> frozenset:
        return self.immutable(lambda: frozenset(self.items(body, depth)))

    def namedtuple(self, body: Any, depth: int) -> tuple:
        index, items = self.parts(body, 2, "named tuple")
        cls, _ = self.klass(index, lambda c: issubclass(c, tuple), "named tuple")

        def build() -> tuple:
            values = self.items(items, depth)
            if len(values) != len(cls._fields):
                raise _bad(f"{_NAMES[cls]} has {len(cls._fields)} fields, not {len(values)}")
            out = tuple.__new__(cls, values)
            if cls in _CHECKS:
                _CHECKS[cls](out)
            return out
        return self.immutable(build)

    def set(self, body: Any, depth: int) -> set:
        out = self.number(set())
        out.update(self.items(body, depth))
        return out

    def mapping(self, kind: type[dict]) -> Callable[[Any, int], dict]:
        def read(body: Any, depth: int) -> dict:
            out = self.number(kind())
            flat = self.items(body, depth)
            if len(flat) % 2:
                raise _bad("a map with an odd number of keys and values")
            for i in range(0, len(flat), 2):
                out[flat[i]] = flat[i + 1]
            return out
        return read

    def deque(self, body: Any, depth: int) -> deque:
        maxlen, items = self.parts(body, 2, "deque")
        if maxlen is not None and (type(maxlen) is not int or maxlen < 0):
            raise _bad("deque maxlen is not a count")
        out = self.number(deque(maxlen=maxlen))
        values = self.items(items, depth)
        if maxlen is not None and len(values) > maxlen:
            raise _bad("deque longer than its maxlen")
        out.extend(values)
        return out

    def bigint(self, body: Any, depth: int) -> int:
        if type(body) is not str or len(body) > 100:
            raise _bad("big integer is not a short decimal string")
        return int(body)

    def bytearray(self, body: Any, depth: int) -> bytearray:
        return self.number(bytearray(self.raw(body)))

    def array(self, body: Any, depth: int) -> array.array:
        typecode, raw = self.parts(body, 2, "array.array")
        if typecode not in _TYPECODES:
            raise _Refused("unknown_type", f"array.array typecode {str(typecode)[:8]!r}")
        out = self.number(array.array(typecode))
        out.frombytes(self.raw(raw))
        return out

    def ndarray(self, body: Any, depth: int) -> np.ndarray:
        dtype, shape, raw = self.parts(body, 3, "array")
        dtype, raw = self.dtype(dtype), self.raw(raw)
        if (type(shape) is not list or len(shape) > MAX_NDIM
                or any(type(n) is not int or n < 0 for n in shape)
                or math.prod(shape) * dtype.itemsize != len(raw)):
            raise _bad("array shape does not match its bytes")
        return self.number(np.frombuffer(raw, dtype=dtype).reshape(shape).copy())

    def scalar(self, body: Any, depth: int) -> np.generic:
        dtype, raw = self.parts(body, 2, "numpy scalar")
        return np.frombuffer(self.raw(raw), dtype=self.dtype(dtype), count=1)[0]

    def random(self, body: Any, depth: int) -> random.Random:
        version, words, gauss = self.parts(body, 3, "random state")
        if (type(words) is not list or len(words) != 625
                or any(type(w) is not int for w in words)
                or gauss is not None and type(gauss) is not float):
            raise _bad("random state is not a Mersenne Twister state")
        out = self.number(random.Random.__new__(random.Random))
        out.setstate((version, tuple(words), gauss))
        return out

    def settings(self, body: Any, depth: int) -> pydantic.BaseModel:
        index, values = self.parts(body, 2, "settings")
        cls, _ = self.klass(index, lambda c: issubclass(c, pydantic.BaseModel), "settings")
        return self.number(cls.model_validate(values))

    def method(self, body: Any, depth: int) -> types.MethodType:
        index, name, owner = self.parts(body, 3, "method")
        cls, _ = self.klass(index, lambda c: c in _METHODS, "method's class")
        if name not in _METHODS[cls]:
            raise _Refused("unknown_type", f"method {str(name)[:60]!r} of {_NAMES[cls]}")
        obj = self.value(owner, depth)
        if type(obj) is not cls:
            raise _bad(f"method of {_NAMES[cls]} bound to a {type(obj).__name__}")
        return types.MethodType(cls.__dict__[name], obj)

    def object(self, body: Any, depth: int) -> Any:
        if type(body) is not list or not body:
            raise _bad("object is not [class, values]")
        cls, fields = self.klass(body[0], _plain_class, "plain object")
        if len(body) != len(fields) + 1:
            raise _bad(f"{_NAMES[cls]}: {len(body) - 1} values for {len(fields)} fields")
        obj = self.number(object.__new__(cls))
        slots = _SLOTS[cls]
        for name, node in zip(fields, body[1:], strict=True):
            value = node if type(node) in _PLAIN else self.value(node, depth)
            if name in slots:
                object.__setattr__(obj, name, value)
            else:
                obj.__dict__[name] = value
        return obj

    def native(self, body: Any, depth: int) -> Any:
        """One of River's compiled objects: its constructor's numbers, then its own
        ``__setstate__`` (River's Rust deserializer, which only parses numbers)."""
        index, args, raw = self.parts(body, 3, "native object")
        cls, _ = self.klass(index, lambda c: c in _NATIVE, "native object")
        if (type(args) is not list or len(args) > 8 or any(
                type(a) not in (int, float) or type(a) is int and not 0 <= a < 1 << 24
                or type(a) is float and not math.isfinite(a) for a in args)):
            raise _bad(f"{_NAMES[cls]}: constructor numbers out of bounds")
        obj = self.number(cls.__new__(cls, *args))
        try:
            obj.__setstate__(self.raw(raw))
        except BaseException as exc:  # a Rust panic is a BaseException (pyo3)
            if type(exc).__name__ != "PanicException":
                raise
            raise _bad(f"{_NAMES[cls]}: state does not parse") from None
        if list(obj.__getnewargs__()) != args:
            raise _bad(f"{_NAMES[cls]}: state does not match its constructor numbers")
        return obj

    @staticmethod
    def parts(body: Any, n: int, what: str) -> list[Any]:
        if type(body) is not list or len(body) != n:
            raise _bad(f"{what} is not a list of {n}")
        return body

    @staticmethod
    def raw(value: Any) -> bytes:
        if type(value) is not bytes:
            raise _bad("raw bytes expected")
        return value

    @staticmethod
    def dtype(name: Any) -> np.dtype:
        dtype = _DTYPES.get(name) if type(name) is str else None
        if dtype is None:
            raise _Refused("unknown_type", f"numpy dtype {str(name)[:40]!r}")
        return dtype


def _plain_class(cls: type) -> bool:
    """Rebuilt field by field (``Tag.OBJECT``): not a tuple, settings or compiled class."""
    return not issubclass(cls, tuple | pydantic.BaseModel) and cls not in _NATIVE + (
        random.Random,)
