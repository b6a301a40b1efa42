"""c2f_numpy: a pure-NumPy reference implementation of Conv2Former (Hou et al., TPAMI 2024, arXiv 2211.11943).

Subpackages: :mod:`c2f_numpy.ops` (the teaching copy of every op, forward and hand-written backward),
:mod:`c2f_numpy.gradcheck` (finite-difference gradient checks) and :mod:`c2f_numpy.testing` (the tolerance
table and the comparison used by the tests and the oracle).
"""

__version__ = "0.1.0.dev0"
