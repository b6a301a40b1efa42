"""A bounded pickle machine: reads pickle protocols 0-5 without Python recursion, with every cost bounded.

:class:`pickle.Unpickler` trusts the stream's shape: a tuple nested 300,000 deep used as a dict key makes
CPython's hash recurse until the C stack overflows (SIGSEGV); a ``LONG_BINPUT`` with a large index sizes the
memo table by that index (GiBs from 5 bytes); a shared structure of 40 tuples with 2^40 leaves costs minutes to
hash or repr; an early ``STOP`` returns part of the object with no error. This machine is a loop over the bytes
(never recursive) that:

* ends only at a ``STOP`` that is the stream's last byte (the whole pickle is consumed, nothing is left over);
* keeps the memo in a dict (its size follows the opcodes read, not the indices they name);
* checks every length field against the bytes that remain before slicing;
* tracks the depth and the expanded size (leaves counted with multiplicity) of each tuple and frozenset as
  it is built, refusing one deeper than ``max_depth`` or larger than ``max_nodes``: these are the only
  containers CPython hashes or compares recursively, so the checks come before any dict or set sees them;
* then measures the finished object graph iteratively: nesting deeper than ``max_depth``, more than
  ``max_nodes`` expanded nodes or a reference cycle is an error (so any later walk of the result is bounded);
* resolves globals, calls, ``NEWOBJ`` and ``BUILD`` only through a :class:`UnpicklePolicy` (the allow-list of
  the caller); the machine itself constructs nothing but numbers, strings, bytes and the built-in containers.

Every failure is the caller's ``error`` class (a :class:`~.errors.FileFormatError`) with the byte position and
a message of bounded length. Public API: :func:`safe_unpickle`, :class:`UnpicklePolicy`.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from typing import Final, Protocol

from .errors import FileFormatError, brief

__all__ = ["MAX_DEPTH", "UnpicklePolicy", "safe_unpickle"]

MAX_DEPTH: Final = 100
_MIN_NODES: Final = 1 << 20  # expanded-size allowance of any pickle, however small
_MAX_LONG_BYTES: Final = 1 << 12  # LONG1 / LONG4 payloads: torch writes at most 8
_MAX_PROTOCOL: Final = 5


class UnpicklePolicy(Protocol):
    """What a pickle may build beyond plain data: the caller's allow-list. Each method raises to refuse."""

    def find_class(self, module: str, name: str) -> object:
        """The stand-in for global ``module.name``."""
        ...

    def persistent_load(self, pid: object) -> object:
        """The object of a persistent id (``BINPERSID``)."""
        ...

    def call(self, func: object, args: tuple[object, ...]) -> object:
        """``REDUCE``: ``func(*args)`` if ``func`` is an allowed callable."""
        ...

    def new(self, cls: object, args: tuple[object, ...]) -> object:
        """``NEWOBJ``: ``cls.__new__(cls, *args)`` if ``cls`` is an allowed class."""
        ...

    def build(self, obj: object, state: object) -> None:
        """``BUILD``: set the state of ``obj`` if its type allows it."""
        ...


def safe_unpickle(
    data: bytes,
    policy: UnpicklePolicy,
    *,
    error: type[FileFormatError] = FileFormatError,
    what: str = "pickle",
    max_depth: int = MAX_DEPTH,
    max_nodes: int | None = None,
) -> object:
    """Unpickle ``data`` with the bounds described in the module docstring.

    In: the whole pickle; the policy; the error class to raise; ``what`` names the stream in messages;
    ``max_depth`` bounds nesting; ``max_nodes`` bounds expanded sizes (default: ``max(2^20, 4 * len(data))``).
    Out: the unpickled object. Raises ``error`` for anything the machine refuses, with the byte position.
    """
    limit = max_nodes if max_nodes is not None else max(_MIN_NODES, 4 * len(data))
    machine = _Machine(bytes(data), policy, error, what, max_depth, limit)
    result = machine.run()
    _measure(result, max_depth, limit, lambda msg: error(f"{what}: {msg}"))
    return result


class _Machine:
    """One run over one pickle. ``_sizes`` maps id(tuple or frozenset) -> (object, depth, expanded size)."""

    def __init__(
        self,
        data: bytes,
        policy: UnpicklePolicy,
        error: type[FileFormatError],
        what: str,
        max_depth: int,
        max_nodes: int,
    ) -> None:
        self.data = data
        self.pos = 0
        self.policy = policy
        self.error = error
        self.what = what
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self.memo: dict[int, object] = {}
        # The object is kept in the entry so its id cannot be reused by another object during the run.
        self._sizes: dict[int, tuple[object, int, int]] = {}
        self.op_pos = 0

    # -------------------------------------------------------------------------------------------------------
    # Reading the stream.

    def fail(self, message: str) -> FileFormatError:
        return self.error(f"{self.what}: {message} (at byte {self.op_pos} of {len(self.data)})")

    def take(self, n: int) -> bytes:
        if n < 0 or n > len(self.data) - self.pos:
            raise self.fail(f"expected {n} more bytes, found {len(self.data) - self.pos} (truncated or corrupt)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> int:
        value: int = struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def line(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise self.fail("expected a newline-terminated argument, found the end of the stream")
        text = self.data[self.pos : end]
        self.pos = end + 1
        return text

    # -------------------------------------------------------------------------------------------------------
    # The stack.

    # A MARK starts a new list (the previous one goes to ``metastack``), so the current stack holds only
    # objects pushed since the last MARK.

    def pop(self) -> object:
        if not self.stack:
            raise self.fail("expected an object on the stack, found none since the last MARK")
        return self.stack.pop()

    def top(self) -> object:
        if not self.stack:
            raise self.fail("expected an object on the stack, found none since the last MARK")
        return self.stack[-1]

    def pop_mark(self) -> list[object]:
        """The items pushed since the last MARK; the stack before the MARK becomes current again."""
        if not self.metastack:
            raise self.fail("expected a MARK before this opcode, found none")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def push(self, value: object) -> None:
        self.stack.append(value)

    # -------------------------------------------------------------------------------------------------------
    # Size tracking of the containers CPython hashes recursively.

    def _measure_child(self, child: object) -> tuple[int, int]:
        entry = self._sizes.get(id(child))
        return (entry[1], entry[2]) if entry is not None else (0, 1)

    def track(self, obj: tuple[object, ...] | frozenset[object], items: list[object] | tuple[object, ...]) -> None:
        depth, size = 0, 1
        for item in items:
            d, s = self._measure_child(item)
            depth = max(depth, d)
            size += s
        depth += 1
        if depth > self.max_depth:
            raise self.fail(f"expected containers nested at most {self.max_depth} deep, found {depth}")
        if size > self.max_nodes:
            raise self.fail(
                f"expected a {type(obj).__name__} of at most {self.max_nodes} elements counting shared ones each "
                f"time, found {size}"
            )
        self._sizes[id(obj)] = (obj, depth, size)

    def make_tuple(self, items: list[object]) -> tuple[object, ...]:
        result = tuple(items)
        self.track(result, items)
        return result

    def hashable(self, key: object) -> object:
        """Check that ``key`` can be hashed cheaply (tuples are bounded by :meth:`track`)."""
        if isinstance(key, list | dict | set | bytearray):
            raise self.fail(f"expected a hashable dict key or set item, found a {type(key).__name__}")
        return key

    # -------------------------------------------------------------------------------------------------------
    # The loop.

    def run(self) -> object:
        handlers = _HANDLERS
        data = self.data
        end = len(data)
        while self.pos < end:
            self.op_pos = self.pos
            code = data[self.pos]
            self.pos += 1
            if code == 0x2E:  # STOP
                if self.pos != end:
                    raise self.fail(
                        f"expected STOP to be the last byte, found {end - self.pos} more bytes after it "
                        "(two pickles, or a pickle cut short and then padded)"
                    )
                if len(self.stack) != 1 or self.metastack:
                    raise self.fail(
                        f"expected exactly one object on the stack at STOP, found {len(self.stack)} "
                        f"and {len(self.metastack)} open MARKs"
                    )
                return self.stack[0]
            handler = handlers.get(code)
            if handler is None:
                raise self.fail(f"unsupported or invalid opcode 0x{code:02x}")
            try:
                handler(self)
            except FileFormatError:
                raise
            except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, struct.error) as exc:
                # A policy callable or a container refused its arguments. Only a string message is shown: the
                # exception's arguments may hold an object from the file, whose repr is unbounded.
                detail = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
                raise self.fail(f"{type(exc).__name__} {brief(detail, 200)}") from None
        self.op_pos = end
        raise self.fail("expected a STOP opcode, found the end of the stream (truncated)")


def _measure(root: object, max_depth: int, max_nodes: int, fail: Callable[[str], FileFormatError]) -> None:
    """Walk the result without recursion: refuse cycles, nesting deeper than ``max_depth`` and more than
    ``max_nodes`` expanded nodes (the cost of any later full walk, e.g. a repr)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # Entries: (object, its child containers not yet visited, expanded size so far).
    path: list[tuple[object, list[object], list[int]]] = []

    def children(obj: object) -> list[object] | None:
        if isinstance(obj, dict):
            items: list[object] = [*obj.keys(), *obj.values()]
            extra = getattr(obj, "__dict__", None)
            if isinstance(extra, dict) and extra:
                items.append(extra)
            return items
        if isinstance(obj, list | tuple | set | frozenset):
            return list(obj)
        return None

    def enter(obj: object, items: list[object]) -> None:
        if len(path) >= max_depth:
            raise fail(f"expected containers nested at most {max_depth} deep, found deeper")
        on_path.add(id(obj))
        path.append((obj, items, [1]))

    top = children(root)
    if top is None:
        return
    enter(root, top)
    while path:
        obj, items, size = path[-1]
        if items:
            child = items.pop()
            key = id(child)
            if key in sizes:
                size[0] += sizes[key]
            elif key in on_path:
                raise fail("expected a tree of containers, found a reference cycle")
            else:
                grand = children(child)
                if grand is None:
                    size[0] += 1
                else:
                    enter(child, grand)
        else:
            path.pop()
            on_path.discard(id(obj))
            sizes[id(obj)] = size[0]
            if path:
                path[-1][2][0] += size[0]
        if path and path[-1][2][0] > max_nodes:
            raise fail(f"expected at most {max_nodes} objects counting shared ones each time, found more")


# ------------------------------------------------------------------------------------------------------------
# Opcode handlers.


def _proto(m: _Machine) -> None:
    version = m.take(1)[0]
    if version > _MAX_PROTOCOL:
        raise m.fail(f"expected pickle protocol at most {_MAX_PROTOCOL}, found {version}")


def _frame(m: _Machine) -> None:
    # Framing only groups opcodes for buffered reading; the whole stream is in memory already.
    size = m.unpack("<Q")
    if size > len(m.data) - m.pos:
        raise m.fail(f"expected a frame of at most {len(m.data) - m.pos} bytes, found one of {size}")


def _int_text(m: _Machine) -> None:
    text = m.line()
    if text == b"00":
        m.push(False)
    elif text == b"01":
        m.push(True)
    else:
        m.push(int(text))


def _long_text(m: _Machine) -> None:
    text = m.line()
    m.push(int(text[:-1] if text.endswith(b"L") else text))


def _long(m: _Machine, n: int) -> None:
    if n > _MAX_LONG_BYTES:
        raise m.fail(f"expected an integer of at most {_MAX_LONG_BYTES} bytes, found {n}")
    m.push(int.from_bytes(m.take(n), "little", signed=True))


def _text(m: _Machine, n: int) -> None:
    m.push(m.take(n).decode("utf-8", "surrogatepass"))


def _py2_string(m: _Machine, n: int) -> None:
    _push_ascii(m, m.take(n))


def _string_text(m: _Machine) -> None:
    text = m.line()
    if len(text) < 2 or text[0] != text[-1] or text[:1] not in (b"'", b'"'):
        raise m.fail("expected a quoted string argument for STRING")
    _push_ascii(m, codecs.escape_decode(text[1:-1])[0])


def _push_ascii(m: _Machine, raw: bytes) -> None:
    try:
        m.push(raw.decode("ascii"))
    except UnicodeDecodeError:
        raise m.fail("expected an ASCII Python 2 string, found non-ASCII bytes") from None


def _memo_get(m: _Machine, index: int) -> None:
    try:
        m.push(m.memo[index])
    except KeyError:
        raise m.fail(f"expected memo entry {brief(index)} to exist, found it never stored") from None


def _memo_put(m: _Machine, index: int) -> None:
    if index < 0:
        raise m.fail(f"expected a non-negative memo index, found {brief(index)}")
    m.memo[index] = m.top()


def _tuple_n(m: _Machine, n: int) -> None:
    if len(m.stack) < n:
        raise m.fail(f"expected {n} objects on the stack for a tuple, found {len(m.stack)}")
    items = m.stack[len(m.stack) - n :]
    del m.stack[len(m.stack) - n :]
    m.push(m.make_tuple(items))


def _append(m: _Machine) -> None:
    value = m.pop()
    _appends(m, m.top(), [value])


def _appends_mark(m: _Machine) -> None:
    items = m.pop_mark()
    _appends(m, m.top(), items)


def _setitem(m: _Machine) -> None:
    value = m.pop()
    key = m.pop()
    _setitems(m, m.top(), [key, value])


def _setitems_mark(m: _Machine) -> None:
    items = m.pop_mark()
    _setitems(m, m.top(), items)


def _dict_mark(m: _Machine) -> None:
    target: dict[object, object] = {}
    _setitems(m, target, m.pop_mark())
    m.push(target)


def _pop_mark(m: _Machine) -> None:
    m.pop_mark()


def _setitems(m: _Machine, target: object, items: list[object]) -> None:
    if not isinstance(target, dict):
        raise m.fail(f"expected a dict to set items on, found {brief(target)}")
    if len(items) % 2:
        raise m.fail(f"expected key/value pairs, found {len(items)} objects")
    for i in range(0, len(items), 2):
        target[m.hashable(items[i])] = items[i + 1]


def _appends(m: _Machine, target: object, items: list[object]) -> None:
    if not isinstance(target, list):
        raise m.fail(f"expected a list to append to, found {brief(target)}")
    target.extend(items)


def _global(m: _Machine, module: object, name: object) -> None:
    if not isinstance(module, str) or not isinstance(name, str):
        raise m.fail("expected a global named by two strings")
    m.push(m.policy.find_class(module, name))


def _global_text(m: _Machine) -> None:
    module = m.line().decode("utf-8", "surrogatepass")
    name = m.line().decode("utf-8", "surrogatepass")
    _global(m, module, name)


def _stack_global(m: _Machine) -> None:
    name = m.pop()
    module = m.pop()
    _global(m, module, name)


def _reduce(m: _Machine) -> None:
    args = m.pop()
    func = m.pop()
    if not isinstance(args, tuple):
        raise m.fail(f"expected a tuple of arguments for REDUCE, found {brief(args)}")
    m.push(m.policy.call(func, args))


def _newobj(m: _Machine) -> None:
    args = m.pop()
    cls = m.pop()
    if not isinstance(args, tuple):
        raise m.fail(f"expected a tuple of arguments for NEWOBJ, found {brief(args)}")
    m.push(m.policy.new(cls, args))


def _newobj_ex(m: _Machine) -> None:
    kwargs = m.pop()
    args = m.pop()
    cls = m.pop()
    if not isinstance(args, tuple) or kwargs != {}:
        raise m.fail("expected NEWOBJ_EX with a tuple of arguments and no keyword arguments")
    m.push(m.policy.new(cls, args))


def _build(m: _Machine) -> None:
    state = m.pop()
    m.policy.build(m.top(), state)


def _frozenset(m: _Machine) -> None:
    items = m.pop_mark()
    result = frozenset(m.hashable(x) for x in items)
    m.track(result, items)
    m.push(result)


def _additems(m: _Machine) -> None:
    items = m.pop_mark()
    target = m.top()
    if not isinstance(target, set):
        raise m.fail(f"expected a set to add items to, found {brief(target)}")
    target.update(m.hashable(x) for x in items)


def _pop(m: _Machine) -> None:
    # As CPython: POP right after a MARK discards the MARK.
    if m.stack:
        m.stack.pop()
    else:
        m.pop_mark()


def _mark(m: _Machine) -> None:
    m.metastack.append(m.stack)
    m.stack = []


def _persid_bin(m: _Machine) -> None:
    m.push(m.policy.persistent_load(m.pop()))


def _refuse(what: str) -> Callable[[_Machine], None]:
    def handler(m: _Machine) -> None:
        raise m.fail(f"opcode {what} is not used by the files this reader accepts")

    return handler


_HANDLERS: Final[dict[int, Callable[[_Machine], None]]] = {
    0x80: _proto,  # PROTO
    0x95: _frame,  # FRAME
    ord("("): _mark,  # MARK
    ord("0"): _pop,  # POP
    ord("1"): _pop_mark,  # POP_MARK
    ord("2"): lambda m: m.push(m.top()),  # DUP
    ord("N"): lambda m: m.push(None),  # NONE
    0x88: lambda m: m.push(True),  # NEWTRUE
    0x89: lambda m: m.push(False),  # NEWFALSE
    ord("I"): _int_text,  # INT
    ord("L"): _long_text,  # LONG
    ord("J"): lambda m: m.push(m.unpack("<i")),  # BININT
    ord("K"): lambda m: m.push(m.unpack("<B")),  # BININT1
    ord("M"): lambda m: m.push(m.unpack("<H")),  # BININT2
    0x8A: lambda m: _long(m, m.unpack("<B")),  # LONG1
    0x8B: lambda m: _long(m, m.unpack("<i")),  # LONG4
    ord("F"): lambda m: m.push(float(m.line())),  # FLOAT
    ord("G"): lambda m: m.push(struct.unpack(">d", m.take(8))[0]),  # BINFLOAT
    ord("X"): lambda m: _text(m, m.unpack("<I")),  # BINUNICODE
    0x8C: lambda m: _text(m, m.unpack("<B")),  # SHORT_BINUNICODE
    0x8D: lambda m: _text(m, m.unpack("<Q")),  # BINUNICODE8
    ord("B"): lambda m: m.push(m.take(m.unpack("<I"))),  # BINBYTES
    ord("C"): lambda m: m.push(m.take(m.unpack("<B"))),  # SHORT_BINBYTES
    0x8E: lambda m: m.push(m.take(m.unpack("<Q"))),  # BINBYTES8
    0x96: lambda m: m.push(bytearray(m.take(m.unpack("<Q")))),  # BYTEARRAY8
    ord("T"): lambda m: _py2_string(m, m.unpack("<i")),  # BINSTRING
    ord("U"): lambda m: _py2_string(m, m.unpack("<B")),  # SHORT_BINSTRING
    ord(")"): lambda m: m.push(m.make_tuple([])),  # EMPTY_TUPLE
    0x85: lambda m: _tuple_n(m, 1),  # TUPLE1
    0x86: lambda m: _tuple_n(m, 2),  # TUPLE2
    0x87: lambda m: _tuple_n(m, 3),  # TUPLE3
    ord("t"): lambda m: m.push(m.make_tuple(m.pop_mark())),  # TUPLE
    ord("]"): lambda m: m.push([]),  # EMPTY_LIST
    ord("l"): lambda m: m.push(m.pop_mark()),  # LIST
    ord("a"): _append,  # APPEND
    ord("e"): _appends_mark,  # APPENDS
    ord("}"): lambda m: m.push({}),  # EMPTY_DICT
    ord("d"): _dict_mark,  # DICT
    ord("s"): _setitem,  # SETITEM
    ord("u"): _setitems_mark,  # SETITEMS
    0x8F: lambda m: m.push(set()),  # EMPTY_SET
    0x90: _additems,  # ADDITEMS
    0x91: _frozenset,  # FROZENSET
    ord("g"): lambda m: _memo_get(m, int(m.line())),  # GET
    ord("h"): lambda m: _memo_get(m, m.unpack("<B")),  # BINGET
    ord("j"): lambda m: _memo_get(m, m.unpack("<I")),  # LONG_BINGET
    ord("p"): lambda m: _memo_put(m, int(m.line())),  # PUT
    ord("q"): lambda m: _memo_put(m, m.unpack("<B")),  # BINPUT
    ord("r"): lambda m: _memo_put(m, m.unpack("<I")),  # LONG_BINPUT
    0x94: lambda m: _memo_put(m, len(m.memo)),  # MEMOIZE
    ord("c"): _global_text,  # GLOBAL
    0x93: _stack_global,  # STACK_GLOBAL
    ord("R"): _reduce,  # REDUCE
    0x81: _newobj,  # NEWOBJ
    0x92: _newobj_ex,  # NEWOBJ_EX
    ord("b"): _build,  # BUILD
    ord("Q"): _persid_bin,  # BINPERSID
    ord("P"): _refuse("PERSID"),
    ord("i"): _refuse("INST"),
    ord("o"): _refuse("OBJ"),
    ord("S"): _string_text,  # STRING
    ord("V"): lambda m: m.push(m.line().decode("raw-unicode-escape")),  # UNICODE
    0x82: _refuse("EXT1"),
    0x83: _refuse("EXT2"),
    0x84: _refuse("EXT4"),
    0x97: _refuse("NEXT_BUFFER"),
    0x98: _refuse("READONLY_BUFFER"),
}
