"""``python -m c2f_numpy.oracle``: the ``c2f-oracle`` command."""

from .cli import main

raise SystemExit(main())
