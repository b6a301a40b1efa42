"""``python -m c2f_numpy.analysis`` is ``c2f-inspect``."""

from .cli import main

raise SystemExit(main())
