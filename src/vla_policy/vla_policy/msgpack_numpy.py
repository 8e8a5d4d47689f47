"""msgpack with numpy arrays: the wire format of the policy server (ROS-free, torch-free).

An ``np.ndarray`` travels as the map ``{'__ndarray__': True, 'dtype': dtype.str, 'shape': [...],
'data': <bin: the C-order bytes>}`` and a numpy scalar as ``{'__npgeneric__': True, 'dtype': ...,
'data': <bin>}``, the layout of openpi's ``openpi_client.msgpack_numpy`` (arrays keep their dtype,
byte order included, and shape; nothing is converted to lists). Everything else is plain msgpack:
dicts, lists (tuples arrive as lists), str, bytes, int, float (64-bit, so Python floats such as
stamps round-trip exactly), bool, None.

Encoding a C-contiguous array hands msgpack the array's own buffer (no intermediate ``tobytes``
copy). Decoding is zero-copy by default: the array is an ``np.frombuffer`` view of the ``bin``
object msgpack produced, hence **read-only**; pass ``writeable=True`` for arrays you may modify.
Object arrays (pointers) and structured/void dtypes (their ``dtype.str`` drops the fields) are
refused with a TypeError naming the dtype.
"""
from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

__all__ = ['packb', 'unpackb', 'Packer']

_ND = '__ndarray__'
_NG = '__npgeneric__'
_REFUSED_KINDS = {'O': 'object', 'V': 'structured/void'}


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.kind in _REFUSED_KINDS:
        raise TypeError(f'msgpack_numpy cannot send {_REFUSED_KINDS[dtype.kind]} arrays (dtype {dtype})')


def _encode(obj: Any) -> Any:
    """msgpack ``default`` hook: numpy arrays and scalars -> tagged maps; anything else is refused."""
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
        data = obj.data if obj.flags.c_contiguous else obj.tobytes()   # the buffer itself when possible
        return {_ND: True, 'dtype': obj.dtype.str, 'shape': list(obj.shape), 'data': data}
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype)
        return {_NG: True, 'dtype': obj.dtype.str, 'data': obj.tobytes()}
    raise TypeError(f'msgpack_numpy cannot encode {type(obj).__name__}')


def _make_decoder(writeable: bool):
    def decode(obj: dict) -> Any:
        if _ND in obj:
            dtype = np.dtype(obj['dtype'])
            _check_dtype(dtype)
            shape = tuple(int(s) for s in obj['shape'])
            arr = np.frombuffer(obj['data'], dtype=dtype)
            if arr.size != int(np.prod(shape, dtype=np.int64)):
                raise ValueError(f'msgpack_numpy: {arr.size} elements of {dtype} do not fill shape {shape}')
            arr = arr.reshape(shape)
            return arr.copy() if writeable else arr
        if _NG in obj:
            dtype = np.dtype(obj['dtype'])
            _check_dtype(dtype)
            return np.frombuffer(obj['data'], dtype=dtype)[0]
        return obj
    return decode


_DECODE_VIEW = _make_decoder(False)
_DECODE_COPY = _make_decoder(True)


def packb(obj: Any) -> bytes:
    """``obj`` (nested dicts/lists of plain values and numpy arrays) -> msgpack bytes.

    Raises:
        TypeError: an object array, a structured dtype, or a type msgpack cannot encode.
    """
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def unpackb(data: bytes, *, writeable: bool = False) -> Any:
    """msgpack bytes -> the object :func:`packb` encoded.

    Arrays are read-only ``np.frombuffer`` views unless ``writeable`` (then each is copied once).

    Raises:
        ValueError: malformed msgpack, or an array whose bytes do not fill its shape
            (``msgpack.ExtraData`` / ``FormatError`` / ``StackError`` are ValueErrors).
        TypeError: an array of a refused dtype.
    """
    return msgpack.unpackb(data, object_hook=_DECODE_COPY if writeable else _DECODE_VIEW, raw=False)


class Packer:
    """A reusable encoder (``Packer().pack(obj)``), as openpi's client keeps one per connection."""

    def __init__(self) -> None:
        self._packer = msgpack.Packer(default=_encode, use_bin_type=True)

    def pack(self, obj: Any) -> bytes:
        return self._packer.pack(obj)
