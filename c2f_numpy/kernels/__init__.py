"""The fast copy: Numba kernels and channels-last (NHWC) twins of every op in :mod:`c2f_numpy.ops`.

``from c2f_numpy.kernels import nhwc`` gives the op namespace the model uses by default (``backend="fast"``; the
choice is made in :mod:`c2f_numpy.backend`). The other modules hold the Numba kernels it calls. Importing this
package chooses Numba's threading layer first (:mod:`.pool`), before any kernel can start it.
"""

from . import pool

pool.select_threading_layer()

from . import nhwc  # noqa: E402  (after the threading layer is chosen)

__all__ = ["nhwc", "pool"]
