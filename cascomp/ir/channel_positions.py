"""`ChannelPositions`: the positions each channel of a group owns in one member, built when first read.

A group member's `indices` is a tuple per channel of the positions it owns. Few callers read them (a
channel's unit, importance scores), while building a Python tuple per channel for every member of every
group costs more than the rest of the grouping: on a 224x224 EfficientNet-B0, 35 ms of 60. The class
keeps the numpy arrays it is cut from and materialises the tuple of tuples on the first read that needs
it; it compares, hashes and prints as that tuple.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ChannelPositions(Sequence):
    """Channel c owns the run `positions[start[r]:start[r] + length[r]]` (ascending) for run r = runs[c]; the
    three tables are the grouping's, shared by every member."""

    def __init__(self, positions: np.ndarray, start: np.ndarray, length: np.ndarray, runs: np.ndarray) -> None:
        self._positions, self._start, self._length, self._runs = positions, start, length, runs
        self._tuples: tuple[tuple[int, ...], ...] | None = None

    def __len__(self) -> int:
        return len(self._runs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.as_tuple()[index]
        run = self._runs[index]  # one channel: no need to build all
        start, length = int(self._start[run]), int(self._length[run])
        return tuple(self._positions[start:start + length].tolist())

    def __iter__(self):
        return iter(self.as_tuple())

    def __eq__(self, other) -> bool:
        if isinstance(other, (ChannelPositions, tuple)):
            return self.as_tuple() == (other.as_tuple() if isinstance(other, ChannelPositions) else other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __repr__(self) -> str:
        return repr(self.as_tuple())

    def as_tuple(self) -> tuple[tuple[int, ...], ...]:
        if self._tuples is None:
            starts, lengths = self._start[self._runs], self._length[self._runs]
            if not len(starts):
                self._tuples = ()
            elif bool((lengths == lengths[0]).all()):  # the usual case: every channel owns as many positions
                columns = self._positions[starts[None, :] + np.arange(lengths[0])[:, None]]
                self._tuples = tuple(zip(*columns.tolist()))  # builds no list per channel
            else:  # uneven: gather just these runs, then cut them apart
                before = np.cumsum(lengths) - lengths
                flat = self._positions[np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()))].tolist()
                self._tuples = tuple(tuple(flat[a:a + n]) for a, n in zip(before.tolist(), lengths.tolist()))
        return self._tuples
