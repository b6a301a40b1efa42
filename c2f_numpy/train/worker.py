"""``python -m c2f_numpy.train.worker``: one helper process of data-parallel training (see ``parallel``)."""

import sys

from .parallel import helper_main

if __name__ == "__main__":
    sys.exit(helper_main())
