"""xarray's chunk-manager entry point for shmdask arrays.

In: ``xr.DataArray(np_or_backend_array).chunk(..., chunked_array_type="shmdask")``
and ``xr.open_dataset(..., chunks=..., chunked_array_type="shmdask")`` ask this
manager to make shmdask arrays.  Out: xarray objects backed by
``shmdask.array.Array``, which stay lazy until ``.compute()``/``.load()``.

Registered in setup.cfg under the ``xarray.chunkmanagers`` entry-point group,
as xarray's documentation on chunked array types asks.

Who computes them.  shmdask arrays are dask collections (see
``shmdask_on_dask.DaskCollection``), so xarray's own dask manager already
recognises them wherever they come from (``xr.DataArray(shmdask_array)``
included) and computes them through ``dask.compute``, which runs them on
shmdask's default scheduler (their ``__dask_scheduler__``), on dask's
configured one, or on a default dask.distributed Client.  xarray refuses an
array that two managers claim, so this one claims shmdask arrays only when
dask is not installed; its operations are dask's manager's otherwise.
"""

from __future__ import annotations

from typing import Any

from xarray.namedarray.daskmanager import DaskManager, dask_available


class ShmdaskChunkManager(DaskManager):
    """Makes shmdask arrays for xarray; see the module docstring."""

    available: bool = True

    def __init__(self) -> None:
        from shmdask.array import Array

        self.array_cls = Array

    def is_chunked_array(self, data: Any) -> bool:
        return not dask_available and isinstance(data, self.array_cls)

    def normalize_chunks(self, chunks: Any, shape: tuple[int, ...] | None = None,
                         limit: int | None = None, dtype: Any = None,
                         previous_chunks: Any = None) -> Any:
        from shmdask.array.chunks import normalize_chunks

        if shape is None:
            raise ValueError("shmdask needs the array's shape to normalize chunks")
        return normalize_chunks(chunks, shape, dtype=dtype, previous=previous_chunks)

    def from_array(self, data: Any, chunks: Any, **kwargs: Any) -> Any:
        from shmdask.array import from_array

        # dask-only options xarray passes (lock, meta, inline_array...) mean
        # nothing here: blocks are read by slicing ``data`` in a task
        name = kwargs.get("name")
        if isinstance(chunks, tuple) and "auto" in chunks and 0 in data.shape:
            chunks = data.shape
        return from_array(data, chunks=chunks, name=name if isinstance(name, str) else None)

    def compute(self, *data: Any, **kwargs: Any) -> tuple:
        import shmdask

        return shmdask.compute(*data, **kwargs)

    def persist(self, *data: Any, **kwargs: Any) -> tuple:
        import shmdask

        return shmdask.persist(*data, **kwargs)

    @property
    def array_api(self) -> Any:
        import shmdask.array

        return shmdask.array

    def rechunk(self, data: Any, chunks: Any, **kwargs: Any) -> Any:
        return data.rechunk(chunks)

    def get_auto_chunk_size(self) -> int:
        from shmdask.array.chunks import AUTO_BYTES

        return AUTO_BYTES
