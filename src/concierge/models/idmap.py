"""``IdMap``: external ids (store ids, strings) <-> dense internal indices (0..n-1).

Models work on integer indices (sparse matrices, arrays); the public API speaks store ids. The map
is built and queried with NumPy's sorted-array search, so a lookup of a million ids is one
vectorized call and not a Python dict walk.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt


class IdMap:
    """A frozen bijection between external string ids and ``0..n-1``.

    Examples
    --------
    >>> m = IdMap.from_values(["b", "a", "b", "c"])
    >>> m.external.tolist()
    ['b', 'a', 'c']
    >>> m.to_internal(["c", "zz", "b"]).tolist()
    [2, -1, 0]
    >>> m.to_external([1, 2]).tolist()
    ['a', 'c']
    """

    __slots__ = ("_order", "_sorted", "external")

    def __init__(self, external: npt.NDArray[np.str_]) -> None:
        ext = np.asarray(external, dtype=np.str_)
        if ext.ndim != 1:
            raise ValueError("external ids must be one-dimensional")
        order = np.argsort(ext, kind="stable")
        srt = ext[order]
        if srt.size > 1 and bool(np.any(srt[1:] == srt[:-1])):
            raise ValueError("external ids must be unique")
        self.external = ext
        self._order = order
        self._sorted = srt

    @classmethod
    def from_values(cls, values: Iterable[str] | npt.NDArray[np.str_]) -> IdMap:
        """Unique ids in order of first appearance."""
        arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, np.str_)
        if arr.size == 0:
            return cls(np.array([], dtype=np.str_))
        _, first = np.unique(arr, return_index=True)
        return cls(arr[np.sort(first)])

    def __len__(self) -> int:
        return int(self.external.size)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.index(key) >= 0

    def index(self, key: str) -> int:
        """The internal index of one id, or -1."""
        i = int(np.searchsorted(self._sorted, key))
        if i < self._sorted.size and self._sorted[i] == key:
            return int(self._order[i])
        return -1

    def to_internal(self, keys: Sequence[str] | npt.NDArray[np.str_]) -> npt.NDArray[np.int64]:
        """Internal indices of ``keys``; -1 where an id is unknown."""
        k = np.asarray(keys, dtype=np.str_)
        if self._sorted.size == 0 or k.size == 0:
            return np.full(k.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted, k)
        pos_c = np.minimum(pos, self._sorted.size - 1)
        hit = self._sorted[pos_c] == k
        return np.where(hit, self._order[pos_c], -1).astype(np.int64)

    def to_external(self, idx: Sequence[int] | npt.NDArray[np.integer]) -> npt.NDArray[np.str_]:
        """External ids of internal indices (they must be valid)."""
        return self.external[np.asarray(idx, dtype=np.int64)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self.external, other.external)

    def __hash__(self) -> int:  # pragma: no cover - maps are not dict keys
        raise TypeError("IdMap is unhashable")

    def __repr__(self) -> str:
        return f"IdMap({len(self)} ids)"
