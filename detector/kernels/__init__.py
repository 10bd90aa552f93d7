"""Compiled kernels over columns of values, each equal to its reference implementation.

One module per kernel, beside the reference it is proven against
(``tests/unit/test_kernels.py`` and ``test_windows_kernel.py`` run >= 1M values through
each and require the same detection indices, statistics and distances):

==================  ==================================  =====================================
module              kernel                              reference
==================  ==================================  =====================================
``adwin``           ``update_many``                     River's ``drift.ADWIN`` (Rust)
``page_hinkley``    ``update_many``                     River's ``drift.PageHinkley``
``cusum``           ``update_many``                     ``detector.detectors.CUSUM``
``jump``            ``update_many``                     ``detector.detectors.Jump``
``standardize``     ``transform_many``, ``restart``     ``detector.detectors.Standardizer``
``stream``          ``update_many``                     ``detector.monitor.Stream.update``
``windows``         ``codes``, ``window_distances``     ``detector.reference.NumericReference``
==================  ==================================  =====================================

The shape follows stumpy: a small private compiled function over arrays
(``_adwin_update_many``) wrapped by a public Python function that validates, allocates
and documents (``update_many``). The per-value steps (``adwin.step``,
``cusum.step``, ...) are inlined into the column loops, so ``stream`` runs a whole
column of one stream, every channel included, in one compiled loop.

State is plain data: each module's ``new_state`` returns a ``NamedTuple`` of numpy
arrays with one row per detector (``stack`` puts several in one state), read back with
``statistics``; ``state._asdict()`` is all a checkpoint needs.

Compilation (``_jit``): numba, cached on disk when it can write somewhere; call
``warm_up`` at start-up so that the first batch does not wait for it.
"""

from __future__ import annotations

import numpy as np

from detector.kernels import adwin, cusum, jump, page_hinkley, standardize, stream, windows
from detector.reference import NumericReference


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel, on a few values.

    >>> warm_up()
    """
    values = np.linspace(-1.0, 1.0, 64)
    adwin.update_many(adwin.new_state(), values)
    cusum.update_many(cusum.new_state(), values)
    page_hinkley.update_many(page_hinkley.new_state(), values)
    jump.update_many(jump.new_state(), values)
    standardize.transform_many(standardize.new_state(1000, 5, 5.0), values)
    state = stream.new_state(
        [(kind, {}) for kind in stream.KINDS], standardize.new_state(1000, 5, 5.0), 500)
    stream.update_many(state, values)
    ref = NumericReference.from_values(values, bins=4)
    windows.window_distances(ref, windows.codes(ref, values), np.array([32, 48, 64]), 32,
                             ("psi", "js", "ks"))
