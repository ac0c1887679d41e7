"""Codes and ids out of an index, for a vector database or another faiss deployment.

Two formats, both streamed in chunks from the memory-mapped codes and written atomically:

- ``.parquet``: columns ``id`` (int64) and ``code`` (list of bits/8 uint8, the packed code), the row layout
  of a binary-vector field (Milvus ``BINARY_VECTOR`` of dim = bits takes bits/8 bytes per vector).
- ``.bin``: headerless fixed-size records, ``id`` as little-endian int64 then the bits/8 code bytes; read it
  with ``np.fromfile(path, dtype=export_dtype(bits))``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from retrieval.index import CodeIndex
from utils.io import atomic_write

FORMATS = (".parquet", ".bin")
_CHUNK = 1 << 20


def export_dtype(bits: int) -> np.dtype:
    """One record of the ``.bin`` export."""
    return np.dtype([("id", "<i8"), ("code", np.uint8, (bits // 8,))])


def export(index: CodeIndex, output: str | os.PathLike) -> Path:
    """Write every item's id and packed code to ``output`` (``.parquet`` or ``.bin``)."""
    output = Path(output)
    if output.suffix not in FORMATS:
        raise ValueError(f"export file '{output}' must end in {' or '.join(FORMATS)}")
    codes = index.codes()
    chunks = ((np.arange(start, min(start + _CHUNK, index.count), dtype=np.int64), codes[start:start + _CHUNK])
              for start in range(0, index.count, _CHUNK))
    if output.suffix == ".bin":
        def write(f):
            for ids, block in chunks:
                records = np.empty(len(ids), dtype=export_dtype(index.bits))
                records["id"], records["code"] = ids, block
                f.write(records.tobytes())
    else:
        schema = pa.schema([("id", pa.int64()), ("code", pa.list_(pa.uint8(), index.bits // 8))])

        def write(f):
            with pq.ParquetWriter(f, schema) as writer:
                for ids, block in chunks:
                    code = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(block).ravel()),
                                                            index.bits // 8)
                    writer.write_table(pa.table({"id": ids, "code": code}, schema=schema))
    atomic_write(output, write)
    return output
