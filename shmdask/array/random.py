"""Random arrays: ``da.random.random``, ``normal``, ``randint``, ... and generators.

In: a distribution, its parameters, ``size`` and ``chunks``; optionally a seed
(``RandomState(seed)``, ``default_rng(seed)``).  Out: an Array whose block
``(i, j, ...)`` is drawn by a numpy ``Generator`` seeded with
``SeedSequence(entropy, spawn_key=(flat block number,))`` -- exactly the
i-th child of ``SeedSequence(entropy).spawn(n)`` -- so every block has its own
independent stream, the numbers depend only on (seed, chunks), and every
scheduler (in any process) draws the same values.  Without a seed the
entropy is drawn once when the graph is built, so a built graph is
deterministic.

Blocks carry only ``(entropy, block number, block shape)``: nothing is
spawned or hashed per block while building, and a random layer is blockwise,
so it fuses into whatever reads it (``random(...).sum()`` is one task per
block plus the reduction tree).
"""

from __future__ import annotations

import secrets
from functools import partial
from typing import Any

import numpy as np

from shmdask import result_buffers

from .chunks import normalize_chunks
from .core import Array, token_name
from .creation import normalize_shape
from .layers import BlockwiseLayer

# Methods that fill an array given as ``out=``: their blocks are drawn into
# result_buffers.empty, in a worker straight into shared memory (no copy there).
_FILLS = frozenset({"random", "standard_normal"})


def _draw(method: str, entropy: int, kwargs: dict, block: tuple) -> np.ndarray:
    """One block: ``block`` is ``(flat block number, block shape)``."""
    number, shape = block
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy,
                                                                     spawn_key=(number,))))
    if method in _FILLS:
        out = result_buffers.empty(shape, kwargs.get("dtype", np.float64))
        return getattr(rng, method)(out=out, **kwargs)
    return getattr(rng, method)(size=shape, **kwargs)


def _block_info(numblocks: tuple, chunks: tuple, idx: tuple) -> tuple:
    number = 0
    for i, n in zip(idx, numblocks, strict=False):
        number = number * n + i
    return (number, tuple(c[i] for c, i in zip(chunks, idx, strict=False)))


class Generator:
    """A seeded source of random Arrays (numpy's ``Generator`` API, chunked)."""

    def __init__(self, seed: Any = None):
        if isinstance(seed, np.random.SeedSequence):
            entropy = seed.entropy
        elif seed is None:
            entropy = None
        else:
            entropy = np.random.SeedSequence(seed).entropy
        self._entropy = entropy
        self._calls = 0

    def _next_entropy(self) -> int:
        """Each call of a seeded generator gets its own stream, in call order."""
        if self._entropy is None:
            return secrets.randbits(128)
        self._calls += 1
        return int(np.random.SeedSequence(self._entropy,
                                          spawn_key=(2**32 - 1, self._calls)).generate_state(
            4, np.uint32).view(np.uint64)[0])

    def _wrap(self, method: str, size: Any, chunks: Any, out_dtype: Any, **kwargs: Any) -> Array:
        dtype = np.dtype(out_dtype)
        shape = () if size is None else normalize_shape(size, "size")
        for k, v in kwargs.items():
            if np.ndim(v) != 0 or hasattr(v, "chunks"):
                raise NotImplementedError(f"shmdask.array.random.{method}: array-valued "
                                          f"parameter {k}= is not supported (use a scalar)")
        chunks = normalize_chunks(chunks, shape, dtype)
        entropy = self._next_entropy()
        name = token_name(method if method != "random" else "random_sample", entropy, shape,
                          chunks, kwargs)
        numblocks = tuple(len(c) for c in chunks)
        syms = tuple(f".{d}" for d in range(len(shape)))
        func = partial(_draw, method, entropy, kwargs)
        layer = BlockwiseLayer(name, func, syms, dict(zip(syms, numblocks, strict=False)),
                               [("perblock", partial(_block_info, numblocks, chunks))],
                               fresh=True)
        return Array({name: layer}, name, chunks, dtype)

    def random(self, size: Any = None, dtype: Any = np.float64, chunks: Any = "auto") -> Array:
        dtype = np.dtype(dtype)
        return self._wrap("random", size, chunks, dtype, dtype=dtype)

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None,
                chunks: Any = "auto") -> Array:
        return self._wrap("uniform", size, chunks, np.float64, low=low, high=high)

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Any = None,
               chunks: Any = "auto") -> Array:
        return self._wrap("normal", size, chunks, np.float64, loc=loc, scale=scale)

    def standard_normal(self, size: Any = None, chunks: Any = "auto") -> Array:
        return self._wrap("standard_normal", size, chunks, np.float64)

    def integers(self, low: int, high: int | None = None, size: Any = None,
                 dtype: Any = np.int64, chunks: Any = "auto", endpoint: bool = False) -> Array:
        dtype = np.dtype(dtype)
        return self._wrap("integers", size, chunks, dtype, low=low, high=high, dtype=dtype,
                          endpoint=endpoint)

    def exponential(self, scale: float = 1.0, size: Any = None, chunks: Any = "auto") -> Array:
        return self._wrap("exponential", size, chunks, np.float64, scale=scale)

    def poisson(self, lam: float = 1.0, size: Any = None, chunks: Any = "auto") -> Array:
        return self._wrap("poisson", size, chunks, np.int64, lam=lam)

    def binomial(self, n: int, p: float, size: Any = None, chunks: Any = "auto") -> Array:
        return self._wrap("binomial", size, chunks, np.int64, n=n, p=p)


class RandomState(Generator):
    """numpy's legacy ``RandomState`` method names on the chunked generator.

    The streams are the per-block ``Generator`` streams described above (not
    numpy's legacy Mersenne Twister sequence): reproducible for a seed and
    chunking, independent between blocks.
    """

    def random_sample(self, size: Any = None, chunks: Any = "auto") -> Array:
        return self.random(size, chunks=chunks)

    def random(self, size: Any = None, chunks: Any = "auto", dtype: Any = np.float64) -> Array:
        return Generator.random(self, size, dtype=dtype, chunks=chunks)

    sample = random_sample
    ranf = random_sample

    def rand(self, *shape: int, chunks: Any = "auto") -> Array:
        return self.random(shape, chunks=chunks)

    def randn(self, *shape: int, chunks: Any = "auto") -> Array:
        return self.standard_normal(shape, chunks=chunks)

    def randint(self, low: int, high: int | None = None, size: Any = None,
                chunks: Any = "auto", dtype: Any = np.int64) -> Array:
        if high is None:
            low, high = 0, low
        return self.integers(low, high, size=size, dtype=dtype, chunks=chunks)

    def seed(self, seed: Any = None) -> None:
        self.__init__(seed)


def default_rng(seed: Any = None) -> Generator:
    return Generator(seed)


_global = RandomState()


def seed(value: Any = None) -> None:
    """Seed the module-level generator used by ``da.random.random`` and friends."""
    global _global
    _global = RandomState(value)


def random(size: Any = None, chunks: Any = "auto", **kwargs: Any) -> Array:
    return _global.random(size, chunks=chunks, **kwargs)


def random_sample(size: Any = None, chunks: Any = "auto", **kwargs: Any) -> Array:
    return _global.random(size, chunks=chunks, **kwargs)


sample = random_sample
ranf = random_sample


def rand(*shape: int, chunks: Any = "auto") -> Array:
    return _global.rand(*shape, chunks=chunks)


def randn(*shape: int, chunks: Any = "auto") -> Array:
    return _global.randn(*shape, chunks=chunks)


def uniform(low: float = 0.0, high: float = 1.0, size: Any = None, chunks: Any = "auto") -> Array:
    return _global.uniform(low, high, size, chunks=chunks)


def normal(loc: float = 0.0, scale: float = 1.0, size: Any = None, chunks: Any = "auto") -> Array:
    return _global.normal(loc, scale, size, chunks=chunks)


def standard_normal(size: Any = None, chunks: Any = "auto") -> Array:
    return _global.standard_normal(size, chunks=chunks)


def randint(low: int, high: int | None = None, size: Any = None, chunks: Any = "auto",
            dtype: Any = np.int64) -> Array:
    return _global.randint(low, high, size, chunks=chunks, dtype=dtype)


def exponential(scale: float = 1.0, size: Any = None, chunks: Any = "auto") -> Array:
    return _global.exponential(scale, size, chunks=chunks)


def poisson(lam: float = 1.0, size: Any = None, chunks: Any = "auto") -> Array:
    return _global.poisson(lam, size, chunks=chunks)


def binomial(n: int, p: float, size: Any = None, chunks: Any = "auto") -> Array:
    return _global.binomial(n, p, size, chunks=chunks)


__all__ = ["Generator", "RandomState", "default_rng", "seed", "random", "random_sample",
           "sample", "ranf", "rand", "randn", "uniform", "normal", "standard_normal", "randint",
           "exponential", "poisson", "binomial"]
