"""MkDocs hook: copy MathJax into the built site, so no page loads anything from outside it.

MathJax 3.2.2's single-file build (TeX input, SVG output with built-in glyphs, no font files) ships in the PyPI
package django-static-mathjax (MathJax's own distribution, Apache-2.0; no Django needed), installed by the
`docs` extra.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

MATHJAX = "static/mathjax/es5/tex-svg-full.js"
TARGET = "assets/mathjax/tex-svg-full.js"  # referenced by extra_javascript in mkdocs.yml


def on_post_build(config: Any, **kwargs: Any) -> None:
    import mathjax  # the django-static-mathjax package

    dest = Path(config["site_dir"]) / TARGET
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(mathjax.__file__).parent / MATHJAX, dest)
