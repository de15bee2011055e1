"""A CPU stand-in for the parts of TensorRT that export.tensorrt_runtime touches when it
loads and runs a plan (tests only; see ../README.md)."""

from __future__ import annotations

import ctypes
import enum
import json

import numpy as np

__version__ = "10.13.0.35"
Builder = object  # dha_train.tensorrt_import checks that the real bindings are there


class Logger:
    WARNING = 2

    def __init__(self, severity: int = WARNING) -> None:
        self.severity = severity


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = 0


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.shape: tuple[int, ...] = ()
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shape = tuple(int(d) for d in shape)
        return name == "images"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.shape[0], self.engine.weight.shape[0])

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        n = int(np.prod(self.shape))
        buffer = (ctypes.c_float * n).from_address(self.addresses["images"])
        images = np.frombuffer(buffer, dtype=np.float32).reshape(self.shape[0], -1)
        logits = (images @ self.engine.weight.T + self.engine.bias).astype(np.float32)
        ctypes.memmove(self.addresses["logits"], logits.ctypes.data, logits.nbytes)
        return True


class _Engine:
    num_io_tensors = 2

    def __init__(self, plan: bytes) -> None:
        raw = json.loads(plan)
        self.weight = np.asarray(raw["weight"], dtype=np.float32)
        self.bias = np.asarray(raw["bias"], dtype=np.float32)

    def get_tensor_name(self, index: int) -> str:
        return ("images", "logits")[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == "images" else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType.FLOAT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, self.weight.shape[0]) if name == "logits" else (-1, self.weight.shape[1])

    def create_execution_context(self) -> _Context:
        return _Context(self)


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, plan: bytes) -> _Engine:
        return _Engine(plan)
