"""A CPU stand-in for the ``cuda.bindings.runtime`` calls export.tensorrt_runtime makes:
"device" memory is host memory (tests only; see ../../README.md)."""

from __future__ import annotations

import ctypes
import enum
from types import SimpleNamespace

_buffers: dict[int, ctypes.Array] = {}


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class _Stream(int):
    pass


OK = cudaError_t.cudaSuccess


def cudaGetDeviceCount():
    return OK, 1


def cudaGetDevice():
    return OK, 0


def cudaGetDeviceProperties(device):
    return OK, SimpleNamespace(name=b"NVIDIA H100 80GB HBM3", major=9, minor=0)


def cudaRuntimeGetVersion():
    return OK, 12080


def cudaStreamCreate():
    return OK, _Stream(1)


def cudaStreamSynchronize(stream):
    return (OK,)


def cudaStreamDestroy(stream):
    return (OK,)


def cudaMalloc(size):
    buffer = ctypes.create_string_buffer(int(size))
    _buffers[ctypes.addressof(buffer)] = buffer
    return OK, ctypes.addressof(buffer)


def cudaFree(address):
    _buffers.pop(int(address), None)
    return (OK,)


def cudaMemcpyAsync(dst, src, count, kind, stream):
    ctypes.memmove(int(dst), int(src), int(count))
    return (OK,)
