"""Reading CTranslate2's model.bin (binary version 6) into numpy arrays.

Layout, all little endian (ctranslate2/specs/model_spec.py, ModelSpec._serialize): u32 binary version,
str spec name, u32 revision, u32 count, count x [str name, u8 rank, u32 dims[rank], u8 dtype id,
u32 nbytes, bytes], u32 aliases, aliases x [str alias, str target]; str = u16 length + utf-8 + NUL.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from gemmacli.errors import GemmacliError

if TYPE_CHECKING:
    import numpy as np

BINARY_VERSION = 6
# CTranslate2 data type ids (ctranslate2/specs/model_spec.py, _dtype_to_type_id).
CT2_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}


class _Reader:
    """Little-endian cursor over model.bin; running off the end is a user error, not a struct.error."""

    def __init__(self, data: bytes, path: Path):
        self.data = memoryview(data)  # slices of a memoryview are not copies
        self.pos = 0
        self.path = path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise GemmacliError(f"{self.path} is truncated or not a CTranslate2 model")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        # u16 length (counting a trailing NUL) + utf-8 bytes + NUL.
        raw = self.take(self.uint("H"))
        try:
            return bytes(raw[:-1]).decode("utf-8")
        except UnicodeDecodeError:
            raise GemmacliError(f"{self.path} is not a CTranslate2 model (bad string at byte {self.pos})") from None


def _header(reader: _Reader) -> tuple[int, str]:
    return reader.uint("I"), reader.string()  # binary version, spec name


def read_header(path: Path) -> tuple[int, str]:
    """(binary version, spec name) from the first bytes of model.bin: enough to recognise a Whisper model."""
    with open(path, "rb") as f:
        return _header(_Reader(f.read(4 + 2 + 0xFFFF), path))


def read_variables(path: Path, spec_name: str) -> dict[str, np.ndarray]:
    """Parse model.bin into {name: array}, following aliases; the file must hold a `spec_name`."""
    reader = _Reader(path.read_bytes(), path)
    version, spec = _header(reader)
    if version != BINARY_VERSION:
        raise GemmacliError(f"{path}: CTranslate2 binary version {version} is not supported (expected 6)")
    if spec != spec_name:
        raise GemmacliError(f"{path} holds a CTranslate2 {spec or 'model'}, not a {spec_name}")
    reader.uint("I")  # spec revision: WhisperSpec's layout has not changed with it
    variables = {}
    for _ in range(reader.uint("I")):
        name = reader.string()
        variables[name] = _read_array(reader, name)
    for _ in range(reader.uint("I")):
        alias, target = reader.string(), reader.string()
        if target not in variables:
            raise GemmacliError(f"{path}: alias {alias!r} points to missing variable {target!r}")
        variables[alias] = variables[target]
    if reader.pos != len(reader.data):
        raise GemmacliError(f"{path} has {len(reader.data) - reader.pos} unexpected trailing bytes")
    return variables


def _read_array(reader: _Reader, name: str) -> np.ndarray:
    import numpy as np

    shape = [reader.uint("I") for _ in range(reader.uint("B"))]
    dtype_id = reader.uint("B")
    if dtype_id not in CT2_DTYPES:
        raise GemmacliError(f"{reader.path}: variable {name!r} has unknown data type id {dtype_id}")
    raw = reader.take(reader.uint("I"))
    dtype = CT2_DTYPES[dtype_id]
    if dtype == "bfloat16":  # numpy has no bfloat16: its bits are the top half of a float32
        array = (np.frombuffer(raw, dtype="<u2").astype("<u4") << 16).view("<f4")
    else:
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    if array.size != math.prod(shape):
        raise GemmacliError(f"{reader.path}: variable {name!r} has {array.size} values for shape {shape}")
    return array.reshape(shape)
