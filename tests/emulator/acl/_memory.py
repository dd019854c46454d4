"""Emulated device memory: numpy buffers behind fake addresses, plus the host objects whose real
addresses `acl.util` handed out.

Device addresses start at 0x7E00_0000_0000, far from any real process address, so a device
pointer dereferenced by the CPU (or a host pointer given to the model) is caught. Freed blocks
stay as tombstones: a use after free is reported, not silently served by a new block.
"""

from __future__ import annotations

import bisect
import ctypes
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from acl import _core
from acl._core import INVALID_PARAM, STATE, violation

DEVICE_BASE = 0x7E00_0000_0000
GAP = 4096
HOST_OBJECTS_KEPT = 65536
POISON = 0xCD

# Allocation kinds; "host" is malloc_host (pinned host memory on a PCIe card).
RT = "rt.malloc"
DVPP = "dvpp_malloc"
HOST = "malloc_host"
FREE_CALL = {RT: "rt.free", DVPP: "media.dvpp_free", HOST: "rt.free_host"}


@dataclass
class Block:
    addr: int
    size: int
    kind: str
    buf: np.ndarray[Any, np.dtype[np.uint8]] | None
    pid: int
    device: int
    where: str
    freed: bool = False
    locks: int = 0  # in-flight VDEC frames using this block (rule 24)
    runtime_filled: bool = False  # a dynamic-batch input the runtime fills (rule 17)

    @property
    def on_device(self) -> bool:
        return self.kind != HOST

    def host_address(self) -> int:
        assert self.buf is not None
        return int(self.buf.ctypes.data)


class Memory:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next = DEVICE_BASE
        self.starts: list[int] = []
        self.blocks: dict[int, Block] = {}  # device blocks by address
        self.host_blocks: dict[int, Block] = {}  # malloc_host blocks by their real address
        self.host_objects: OrderedDict[int, tuple[int, Any]] = OrderedDict()
        self.arrays: dict[int, tuple[int, weakref.ref[Any]]] = {}

    def allocate(self, size: int, kind: str, device: int) -> int:
        padded = (size + 31) // 32 * 32 + 32
        if _core.settings().poison:
            buf = np.full(padded, POISON, np.uint8)
        else:
            buf = np.zeros(padded, np.uint8)
        where = _core._caller()
        if kind == HOST:
            block = Block(0, size, kind, buf, os.getpid(), device, where)
            block.addr = block.host_address()
            with self.lock:
                self.host_blocks[block.addr] = block
            return block.addr
        with self.lock:
            addr = self.next
            self.next = (addr + padded + GAP + 127) // 128 * 128
            self.blocks[addr] = Block(addr, size, kind, buf, os.getpid(), device, where)
            bisect.insort(self.starts, addr)
        return addr

    def find(self, addr: int) -> tuple[Block, int] | None:
        """The block holding `addr` (device or malloc_host), and the offset into it."""
        with self.lock:
            block = self.host_blocks.get(addr)
            if block is not None:
                return block, 0
            i = bisect.bisect_right(self.starts, addr) - 1
            if i >= 0:
                block = self.blocks[self.starts[i]]
                if addr < block.addr + block.size + 32:
                    return block, addr - block.addr
            for block in self.host_blocks.values():
                if block.addr <= addr < block.addr + block.size:
                    return block, addr - block.addr
        return None

    def free(self, addr: Any, kind: str) -> None:
        if not isinstance(addr, int) or addr == 0:
            violation("12", INVALID_PARAM, f"free of {addr!r}")
        found = self.find(addr)
        if found is None or found[1] != 0:
            violation("12", INVALID_PARAM, f"{addr:#x} was not returned by an allocator")
            return
        block = found[0]
        if block.freed:
            violation("12", INVALID_PARAM, f"double free of {addr:#x} ({block.kind})")
        if block.kind != kind:
            violation(
                "12", INVALID_PARAM, f"{addr:#x} came from {block.kind}; free it with "
                f"{FREE_CALL[block.kind]}, not {FREE_CALL[kind]}"
            )
        if block.locks:
            violation(
                "24", INVALID_PARAM, f"{addr:#x} freed while a VDEC frame still uses it",
                tolerated=True,
            )
        block.freed = True
        block.buf = None

    def register_host(self, addr: int, size: int, owner: Any) -> None:
        """Remember a host object whose address was handed out. Arrays are held weakly for as
        long as they live (a long-lived output buffer); `bytes`, which cannot be weakly held,
        are kept in a bounded LRU (a packet copied once)."""
        with self.lock:
            if isinstance(owner, np.ndarray):
                self.arrays[addr] = (size, weakref.ref(owner))
                return
            self.host_objects[addr] = (size, owner)
            self.host_objects.move_to_end(addr)
            while len(self.host_objects) > HOST_OBJECTS_KEPT:
                self.host_objects.popitem(last=False)

    def host_range(self, addr: int) -> tuple[int, int] | None:
        """(start, size) of a registered host object containing addr."""
        with self.lock:
            entry = self.host_objects.get(addr)
            if entry is not None:
                return addr, entry[0]
            array = self.arrays.get(addr)
            if array is not None and array[1]() is not None:
                return addr, array[0]
            for start, (size, ref) in list(self.arrays.items()):
                if ref() is None:
                    del self.arrays[start]
                elif start <= addr < start + size:
                    return start, size
            for start, (size, _) in reversed(self.host_objects.items()):
                if start <= addr < start + size:
                    return start, size
        return None


MEMORY = Memory()


@dataclass
class Span:
    """A resolved pointer: device block + offset, or a host range."""

    block: Block | None
    offset: int
    host_addr: int
    limit: int  # bytes available from the pointer

    @property
    def on_device(self) -> bool:
        return self.block is not None and self.block.on_device

    def address(self) -> int:
        """A real process address to read or write through ctypes."""
        if self.block is not None:
            return self.block.host_address() + self.offset
        return self.host_addr

    def view(self, count: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
        if self.block is not None:
            assert self.block.buf is not None
            return self.block.buf[self.offset : self.offset + count]
        return np.ctypeslib.as_array(
            ctypes.cast(self.host_addr, ctypes.POINTER(ctypes.c_uint8)), shape=(count,)
        )


def resolve(addr: Any, what: str) -> Span:
    """A pointer the caller passed: a live emulated block, or a registered host object."""
    if not isinstance(addr, int) or addr == 0:
        violation("13", INVALID_PARAM, f"{what} pointer is {addr!r}")
    found = MEMORY.find(addr)
    if found is not None:
        block, offset = found
        if block.freed:
            violation("12", INVALID_PARAM, f"{what} {addr:#x} used after it was freed")
        if block.pid != os.getpid():
            violation("3", _core.INVALID_RESOURCE_HANDLE, f"{what} {addr:#x} from another process")
        return Span(block, offset, 0, block.size - offset)
    host = MEMORY.host_range(addr)
    if host is not None:
        start, size = host
        return Span(None, 0, addr, start + size - addr)
    if addr >= DEVICE_BASE:
        violation("13", INVALID_PARAM, f"{what} {addr:#x} is not an allocated block")
    violation(
        "13", INVALID_PARAM, f"{what} {addr:#x} is neither device memory nor a host buffer "
        "handed out by acl.util (bytes_to_ptr / numpy_to_ptr) or rt.malloc_host"
    )
    raise _core.AclFail(INVALID_PARAM)


def check_unlocked(span: Span, count: int, what: str) -> None:
    if span.block is not None and span.block.runtime_filled:
        violation("17", INVALID_PARAM, f"{what} writes into a dynamic-batch input buffer, which "
                  "the runtime fills (set_dynamic_batch_size says the batch)", tolerated=True)
    if span.block is not None and span.block.locks:
        violation(
            "24", INVALID_PARAM,
            f"{what} writes {count} bytes into a buffer a VDEC frame still reads (in flight "
            "until its callback returns)", tolerated=True,
        )


def leaks() -> list[dict[str, Any]]:
    found = []
    with MEMORY.lock:
        blocks = list(MEMORY.blocks.values()) + list(MEMORY.host_blocks.values())
    for block in blocks:
        if not block.freed and block.pid == os.getpid():
            found.append(
                {"kind": block.kind, "address": hex(block.addr), "size": block.size,
                 "created_at": block.where}
            )
    return found


def account(src: Span, dst: Span, count: int) -> None:
    if src.on_device == dst.on_device:
        key = "device_to_device" if src.on_device else "host_to_host"
    else:
        key = "host_to_device" if dst.on_device else "device_to_host"
    with STATE.lock:
        STATE.bytes_copied[key] += count
