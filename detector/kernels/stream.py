"""One value stream's whole column in one compiled loop: a port of
``detector.monitor.Stream.update``.

For each value, in order: standardise it (optional; ``detector.kernels.standardize``),
feed the z-score to every channel (any number of ADWIN, CUSUM and Page-Hinkley
detectors; a Jump detector gets the value as it came), in the configured order, and
for each firing count it and decide whether it starts an episode. Standardised, after
a value that fired any channel the standardiser restarts on the new regime and every
channel of z-scores starts afresh (as they do when the standardiser's baseline settles
after its learning); when only a Jump fired, the baseline keeps its scale and moves its
level by the jump's shift instead of restarting. So a later
firing is a new change: it starts an episode unless it goes the same way as that
channel's previous firing within ``cooldown`` values (a trend that keeps firing after
each re-learning). On raw values (River mode) a firing more than ``cooldown`` values
after the channel's previous one starts an episode. Each firing is returned with the
stream index, the onset (the stream index where the detector estimates the change
began), its direction and the detector's statistics, exactly what ``Stream.update``
puts in its ``Detection``; feeding a column in one call or in many gives the same
result.

State is plain arrays (``StreamState``, nested per detector kind) so a checkpoint
needs no pickle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from detector import detectors
from detector.kernels import _jit, adwin, cusum, jump, page_hinkley, standardize
from detector.kernels._jit import as_column, collect, kernel
from detector.kernels.adwin import AdwinState
from detector.kernels.cusum import CusumState
from detector.kernels.jump import JumpState
from detector.kernels.page_hinkley import PageHinkleyState
from detector.kernels.standardize import StandardizerState

#: detector types the stream kernel runs, by their code in ``StreamState.channels``
KINDS = ("adwin", "cusum", "page_hinkley", "jump")
_ADWIN, _CUSUM, _PAGE_HINKLEY, _JUMP = 0, 1, 2, 3
_MODULES = {"adwin": adwin, "cusum": cusum, "page_hinkley": page_hinkley, "jump": jump}
_STATISTICS = {kind: module.STATISTIC for kind, module in _MODULES.items()}
#: statistics columns in ``Firings.statistics`` (the longest detector's)
WIDTH = max(len(names) for names in _STATISTICS.values())

# columns of StreamState.config and .counters
_STANDARDIZE, _COOLDOWN = 0, 1
_FIRINGS, _DETECTIONS, _LAST_INDEX, _LAST_DIRECTION = 0, 1, 2, 3
# a channel's last firing before it ever fired, as Channel.last_index
NEVER = -(1 << 62)


class StreamState(NamedTuple):
    """One stream. ``config``: standardize (0/1), cooldown. ``seen``: values fed.
    ``channels[c]``: kind (index in ``KINDS``) and row of channel ``c`` in that kind's
    state. ``counters[c]``: firings, detections (episodes), stream index and direction
    (+1 up, -1 down) of the last firing. ``std``: the standardiser (unused with
    standardize 0). ``adwin``,
    ``cusum``, ``page_hinkley``, ``jump``: the detectors, one row per channel of that
    kind."""

    config: np.ndarray
    seen: np.ndarray
    channels: np.ndarray
    counters: np.ndarray
    std: StandardizerState
    adwin: AdwinState
    cusum: CusumState
    page_hinkley: PageHinkleyState
    jump: JumpState


class Firings(NamedTuple):
    """The firings of one call, in the order ``Stream.update`` reports them.

    ``position``: in the values given; ``index``: in the stream (as
    ``Detection.index``); ``channel``: which channel fired; ``onset``: as
    ``Detection.onset``; ``episode``: True when the firing starts an episode (a
    ``Detection`` in the reference); ``direction``: +1 up, -1 down (of the z-scores;
    of raw values for CUSUM and Page-Hinkley only); ``statistics`` row ``i``: the
    channel kind's ``STATISTIC`` values, then nan.
    """

    position: np.ndarray
    index: np.ndarray
    channel: np.ndarray
    onset: np.ndarray
    episode: np.ndarray
    direction: np.ndarray
    statistics: np.ndarray


def new_state(channels: Sequence[tuple[str, Mapping[str, Any]]],
              std: StandardizerState | None = None, cooldown: int = 0) -> StreamState:
    """A fresh stream with one channel per ``(type, params)`` (e.g.
    ``[(s.type, s.params) for s in specs]``), standardised by ``std`` if given.

    Raises ``ValueError`` for a detector type without a kernel or a bad parameter.
    """
    if cooldown < 0:
        raise ValueError(f"cooldown must be >= 0, got {cooldown}")
    states: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    table = []
    for kind, params in channels:
        if kind not in KINDS:
            raise ValueError(f"no kernel for detector {kind!r}; kernels: {', '.join(KINDS)}")
        table.append((KINDS.index(kind), len(states[kind])))
        states[kind].append(_MODULES[kind].new_state(params))
    return StreamState(
        config=np.array([std is not None, cooldown], dtype=np.int64),
        seen=np.zeros(1, dtype=np.int64),
        channels=np.array(table, dtype=np.int64).reshape(-1, 2),
        counters=np.array([[0, 0, NEVER, 0]] * len(table), dtype=np.int64).reshape(-1, 4),
        # without standardisation the kernel still takes a standardiser, and ignores it
        std=std if std is not None else standardize.new_state(2, 3, 1.0),
        adwin=adwin.stack(states["adwin"]),
        cusum=cusum.stack(states["cusum"]),
        page_hinkley=page_hinkley.stack(states["page_hinkley"]),
        jump=jump.stack(states["jump"]),
    )


_NESTED = {"std": StandardizerState, "adwin": AdwinState, "cusum": CusumState,
           "page_hinkley": PageHinkleyState, "jump": JumpState}
_INTEGER = {"config", "seen", "channels", "counters", "std.counts", "adwin.counts",
            "adwin.sizes", "cusum.counts", "page_hinkley.fired", "jump.counts"}


def to_arrays(state: StreamState) -> dict[str, np.ndarray]:
    """Every array of ``state`` by dotted name (``adwin.totals``), e.g. for ``np.savez``."""
    out = {}
    for name, value in state._asdict().items():
        if name in _NESTED:
            out.update({f"{name}.{field}": a for field, a in value._asdict().items()})
        else:
            out[name] = value
    return out


def from_arrays(arrays: Mapping[str, np.ndarray]) -> StreamState:
    """The state that ``to_arrays`` gave.

    Raises ``ValueError`` for a missing array, a wrong type or shape, or an index out
    of range: the kernel does not check bounds, so a state is checked once, here.
    """
    def take(name: str) -> np.ndarray:
        if name not in arrays:
            raise ValueError(f"stream state has no array {name!r}")
        array, dtype = arrays[name], np.int64 if name in _INTEGER else np.float64
        if array.dtype != dtype:
            raise ValueError(f"stream state array {name!r} is {array.dtype}, not {dtype}")
        return np.ascontiguousarray(array)

    state = StreamState(**{
        name: _NESTED[name](*(take(f"{name}.{field}") for field in _NESTED[name]._fields))
        if name in _NESTED else take(name) for name in StreamState._fields})
    _check_layout(state)
    return state


def _check_layout(state: StreamState) -> None:
    def shaped(array: np.ndarray, rows: int, *rest: int) -> bool:
        return array.shape == (rows, *rest)

    a, c, p, std, j = state.adwin, state.cusum, state.page_hinkley, state.std, state.jump
    na, nc, np_, ns, nj, channels = (len(a.params), len(c.params), len(p.params),
                                     len(std.params), len(j.params), len(state.channels))
    width = a.totals.shape[2] if a.totals.ndim == 3 else 0
    ok = (shaped(state.config, 2) and shaped(state.seen, 1)
          and shaped(state.channels, channels, 2) and shaped(state.counters, channels, 4)
          and ns >= 1 and shaped(std.params, ns, standardize.WIDTHS["params"])
          and shaped(std.moments, ns, standardize.WIDTHS["moments"])
          and shaped(std.counts, ns, standardize.WIDTHS["counts"])
          and std.buffer.shape == std.scratch.shape and std.buffer.ndim == 2
          and (std.buffer.shape[1] >= std.params[:, 1]).all()
          and std.bins.ndim == 3 and std.bins.shape[:2] == (ns, 2)
          and (std.bins.shape[2] >= std.params[:, 4]).all()
          and shaped(a.params, na, 5) and shaped(a.sums, na, 3) and shaped(a.counts, na, 3)
          and shaped(a.sizes, na, adwin.LEVELS) and shaped(a.totals, na, adwin.LEVELS, width)
          and shaped(a.variances, na, adwin.LEVELS, width)
          and shaped(c.params, nc, cusum.WIDTHS["params"])
          and shaped(c.sums, nc, cusum.WIDTHS["sums"])
          and shaped(c.counts, nc, cusum.WIDTHS["counts"])
          and shaped(p.params, np_, 5) and shaped(p.sums, np_, 6) and shaped(p.fired, np_)
          and shaped(j.params, nj, jump.WIDTHS["params"])
          and shaped(j.sums, nj, jump.WIDTHS["sums"])
          and shaped(j.counts, nj, jump.WIDTHS["counts"])
          and shaped(j.start, nj, jump.WIDTHS["start"]) and j.ring.ndim == 2
          and j.ring.shape[0] == nj)
    if not ok:
        raise ValueError("stream state arrays have inconsistent shapes")
    rows = np.array([na, nc, np_, nj])
    kinds, slots = state.channels[:, 0], state.channels[:, 1]
    if ((kinds < 0) | (kinds >= len(KINDS))).any() or (
            (slots < 0) | (slots >= rows[np.clip(kinds, 0, len(KINDS) - 1)])).any():
        raise ValueError("stream state names a detector it does not hold")
    max_buckets = a.params[:, 2]
    if ((max_buckets < 1) | (max_buckets >= width) | (a.params[:, 1] < 1)).any() or (
            (a.sizes < 0) | (a.sizes > max_buckets[:, None])).any() or (
            (a.counts[:, 1] < 0) | (a.counts[:, 1] >= adwin.LEVELS)).any():
        raise ValueError("stream state has an ADWIN window out of its bounds")
    window, after = j.params[:, 0], j.params[:, 1]
    if ((window < 2) | (after < 1) | (window != np.floor(window)) | (after != np.floor(after))
            | (window + after > j.ring.shape[1]) | (j.counts[:, 0] < 0)
            | (j.counts[:, 0] >= window + after) | (j.counts[:, 3] < 0)).any():
        raise ValueError("stream state has a jump ring out of its bounds")


def statistic_names(state: StreamState, channel: int) -> tuple[str, ...]:
    """The names of ``Firings.statistics`` columns for ``channel``."""
    return _STATISTICS[KINDS[int(state.channels[channel, 0])]]


def _reset_channels(s: StreamState) -> None:
    """Every detector of standardised values starts afresh (compiled on its own: it is
    rare); ``jump`` (on raw values) goes on, as ``Stream._reset_channels``."""
    for c in range(s.channels.shape[0]):
        kind, row = s.channels[c, 0], s.channels[c, 1]
        if kind == _ADWIN:
            adwin.reset(s.adwin, row)
        elif kind == _CUSUM:
            cusum.reset(s.cusum, row)
        elif kind == _PAGE_HINKLEY:
            page_hinkley.reset(s.page_hinkley, row)


_reset_channels = kernel(_reset_channels, uses=(_jit, adwin, cusum, page_hinkley))


def _stream_update_many(s: StreamState, values: np.ndarray, start: int, out_int: np.ndarray,
                        out_float: np.ndarray) -> tuple[int, int]:
    n_channels = s.channels.shape[0]
    standardized = s.config[_STANDARDIZE] != 0
    cooldown = s.config[_COOLDOWN]
    count = 0
    for i in range(start, values.size):
        if count + n_channels > out_int.shape[0]:
            return i, count
        index = s.seen[0]
        s.seen[0] = index + 1
        raw = values[i]
        x = raw
        valid = True
        if standardized:
            x, valid, settled = standardize.step(s.std, 0, raw)
            if settled:
                _reset_channels(s)
        fired_any = False
        jumped = False
        moved = 0.0
        for c in range(n_channels):
            kind, row = s.channels[c, 0], s.channels[c, 1]
            if kind == _JUMP:
                fired = jump.step(s.jump, row, raw)
            elif not valid:
                continue
            elif kind == _ADWIN:
                fired = adwin.step(s.adwin, row, x)
            elif kind == _CUSUM:
                fired = cusum.step(s.cusum, row, x)
            else:
                fired = page_hinkley.step(s.page_hinkley, row, x)
            if not fired:
                continue
            if kind == _JUMP:
                jumped = True
                moved = jump.shift(s.jump, row)
            else:
                fired_any = True
            stats = out_float[count]
            stats[:] = np.nan
            if kind == _ADWIN:
                age = adwin.record(s.adwin, row, stats)
                way = adwin.direction(s.adwin, row)
            elif kind == _CUSUM:
                age = cusum.record(s.cusum, row, stats)
                way = cusum.direction(s.cusum, row)
            elif kind == _JUMP:
                age = jump.record(s.jump, row, stats)
                way = jump.direction(s.jump, row)
            else:
                age = 0
                way = page_hinkley.direction(s.page_hinkley, row)
            near = index - s.counters[c, _LAST_INDEX] <= cooldown
            if kind == _JUMP:       # a fresh window after the last onset: a new step
                episode = True
            elif standardized:
                episode = not (near and way == s.counters[c, _LAST_DIRECTION])
            else:
                episode = not near
            s.counters[c, _FIRINGS] += 1
            s.counters[c, _DETECTIONS] += episode
            s.counters[c, _LAST_INDEX] = index
            s.counters[c, _LAST_DIRECTION] = way
            out_int[count, 0] = i
            out_int[count, 1] = index
            out_int[count, 2] = c
            out_int[count, 3] = index - age + 1 if age else index
            out_int[count, 4] = episode
            out_int[count, 5] = way
            count += 1
        if standardized and (fired_any or jumped):
            if fired_any:
                standardize.restart_step(s.std, 0)
            else:
                standardize.relevel_step(s.std, 0, moved)
            _reset_channels(s)
    return values.size, count


_stream_update_many = kernel(_stream_update_many,
                             uses=(_jit, adwin, cusum, jump, page_hinkley, standardize,
                                   detectors))


def update_many(state: StreamState, values: Any) -> Firings:
    """Feed a column of one stream's values, in order (``state`` is updated in place).

    Parameters
    ----------
    state
        From ``new_state``.
    values
        Finite numbers, oldest first.

    Returns
    -------
    Firings
        Every firing of every channel; those with ``episode`` True are the
        detections ``Stream.update`` reports.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> std = standardize.new_state(warmup=1000, min_samples=5, clip=5.0)
    >>> state = new_state([("adwin", {"delta": 3.2e-08}), ("cusum", {"k": 0.5, "h": 22.249})],
    ...                   std, cooldown=500)
    >>> values = np.concatenate([rng.normal(0, 1, 2000), rng.normal(3, 1, 1000)])
    >>> fired = update_many(state, values)
    >>> for i, c, onset in zip(fired.index[fired.episode], fired.channel[fired.episode],
    ...                        fired.onset[fired.episode]):
    ...     print(f"{KINDS[state.channels[c, 0]]} detected drift at index {i}, onset {onset}")
    cusum detected drift at index 2009, onset 2000
    """
    column = as_column(values)
    ints, floats = collect(
        lambda start, oi, of: _stream_update_many(state, column, start, oi, of),
        column.size, max(1, state.channels.shape[0]), 6, WIDTH)
    return Firings(ints[:, 0], ints[:, 1], ints[:, 2], ints[:, 3], ints[:, 4].astype(bool),
                   ints[:, 5], floats)
