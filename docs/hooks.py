"""MkDocs hooks: the notebooks as pages of the site, and MathJax served from the site itself.

**The notebooks.** notebooks/*.ipynb (stored without outputs) become the pages notebooks/01_ops/ to
notebooks/05_training/, executed at build time by the mkdocs-jupyter plugin (mkdocs.yml), in the small settings
unless the environment says otherwise. The hooks below:

- put ``C2F_NOTEBOOK_SMALL=1`` in the build's environment unless it is already set (``C2F_NOTEBOOK_SMALL=0 mkdocs
  build`` runs the full settings); the notebook kernels are subprocesses of the build and inherit it;
- define the kernel ``python3`` as this interpreter, in a temporary directory put first on ``JUPYTER_PATH`` (as
  tests/test_notebooks.py does): a ``python3`` kernelspec installed elsewhere, in ``~/.local/share/jupyter`` say,
  may run another interpreter, one without this checkout's dependencies;
- add the notebooks to the site's files from notebooks/ itself (``on_files``). Not a symlink docs/notebooks ->
  ../notebooks: a symlink is a plain text file in a checkout without symlink support, and everything under
  notebooks/ would become part of the site; here exactly the ``*.ipynb`` files do, each read where it lives, so
  the kernel starts in notebooks/ and the notebooks find the repository root above it, as in Jupyter;
- fix up each notebook page (``on_page_content``): a link in a notebook is written for the repository
  (``../docs/porting.md``, ``02_convmod.ipynb``, ``../c2f_numpy/gradcheck.py``) and becomes the link to that page
  of the site, or a cross-reference to the module's API page; a link to anything else, or to a missing anchor,
  is a warning, so ``--strict`` fails on it as on any page. The table of contents and the anchors that other
  pages may link to are read from the rendered headings (the plugin's own table of contents drops inline code
  from the anchors), and nbconvert's MathJax 2 block is replaced by the configuration of the site's MathJax 3
  that typesets ``$...$`` as Jupyter does.

**MathJax.** MathJax 3.2.2's single-file build (TeX input, SVG output with built-in glyphs, no font files) ships
in the PyPI package django-static-mathjax (MathJax's own distribution, Apache-2.0; no Django needed), installed by
the `docs` extra; ``on_post_build`` copies it into the site.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from markdown.extensions.toc import nest_toc_tokens
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.toc import get_toc

log = logging.getLogger("mkdocs.hooks.c2f_numpy")  # under "mkdocs": a warning fails `mkdocs build --strict`

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOK_INDEX = "notebooks/index.md"  # the Notebooks section's first page

MATHJAX = "static/mathjax/es5/tex-svg-full.js"
TARGET = "assets/mathjax/tex-svg-full.js"  # referenced by extra_javascript in mkdocs.yml

# nbconvert's lab template loads MathJax 2 (from a CDN unless given a URL) with a configuration for it. The site
# loads its own MathJax 3 after the content: this configuration, read when it loads, adds Jupyter's $...$ to
# the default inline delimiters on the notebook pages only (the Markdown pages get \(...\) from arithmatex).
NBCONVERT_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)
MATHJAX3_CONFIG = (
    '<script>window.MathJax = {tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], processEscapes: true}};</script>'
)
LINK = re.compile(r'<a href="(?P<url>[^"]*)"(?P<attrs>[^>]*)>(?P<text>.*?)</a>', re.S)
HEADING = re.compile(r'<h(?P<level>[1-6]) id="(?P<id>[^"]+)"[^>]*>(?P<inner>.*?)</h(?P=level)>', re.S)
ANCHOR_LINK = re.compile(r'<a class="anchor-link"[^>]*>.*?</a>', re.S)
ID = re.compile(r'\sid="([^"]+)"')
TAG = re.compile(r"<[^>]+>")

_kernels: tempfile.TemporaryDirectory[str] | None = None
_anchor_links: list[tuple[str, File, str, str]] = []  # (notebook page, target file, anchor, link as written)


def on_startup(**kwargs: Any) -> None:
    global _kernels
    os.environ.setdefault("C2F_NOTEBOOK_SMALL", "1")
    _kernels = tempfile.TemporaryDirectory(prefix="c2f-docs-jupyter-")
    spec_dir = Path(_kernels.name) / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python 3 ({sys.executable})",
        "language": "python",
        # Figures go into the page: the inline backend, whatever MPLBACKEND the build was started with.
        "env": {"MPLBACKEND": "module://matplotlib_inline.backend_inline"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [_kernels.name, os.environ.get("JUPYTER_PATH")]))


def on_shutdown(**kwargs: Any) -> None:
    if _kernels is not None:
        _kernels.cleanup()


def on_serve(server: Any, **kwargs: Any) -> Any:
    server.watch(str(NOTEBOOK_DIR))  # `mkdocs serve` rebuilds when a notebook changes (and re-executes them all)
    return server


@event_priority(50)  # before mkdocs-jupyter's on_files, which turns the .ipynb files into pages
def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    _anchor_links.clear()
    # A File whose source directory is the repository root: notebooks/01_ops.ipynb is read from there and is
    # the page notebooks/01_ops/. (Not File.generated(abs_src_path=...): mkdocs-jupyter's wrapper of the File
    # recomputes the path from src_dir, which a generated File does not have.)
    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        src_uri = path.relative_to(ROOT).as_posix()
        files.append(File(src_uri, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def _is_notebook(page: Any) -> bool:
    return page.file.src_uri.startswith("notebooks/") and page.file.src_uri.endswith(".ipynb")


def _fix_link(match: re.Match[str], page: Any, files: Files) -> str:
    url = html.unescape(match["url"])
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
        return match[0]  # external, or an anchor on this page
    where = f"{page.file.src_uri}: the link '{url}'"
    target = (NOTEBOOK_DIR / unquote(parts.path)).resolve()  # the notebooks' links are relative to notebooks/
    try:
        rel = target.relative_to(ROOT)
    except ValueError:
        log.warning(f"{where} points outside the repository")
        return match[0]
    if rel.parts[0] == "c2f_numpy" and rel.suffix == ".py" and not parts.fragment:
        # A source file: a cross-reference to the module's API page (autorefs resolves it, or warns).
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        return f'<autoref identifier="{module}">{match["text"]}</autoref>'
    src_uri = rel.relative_to("docs").as_posix() if rel.parts[0] == "docs" else rel.as_posix()
    file = files.get_file_from_path(src_uri)
    if file is None or not file.is_documentation_page():
        log.warning(f"{where} is not to a page of the site (link to a notebook, a page in docs/ or a c2f_numpy module)")
        return match[0]
    if parts.fragment:
        _anchor_links.append((page.file.src_uri, file, parts.fragment, url))
    new_url = file.url_relative_to(page.file) + (f"#{parts.fragment}" if parts.fragment else "")
    return f'<a href="{html.escape(new_url)}"{match["attrs"]}>{match["text"]}</a>'


def on_page_content(html_: str, page: Any, config: Any, files: Files, **kwargs: Any) -> str:
    if not _is_notebook(page):
        return html_
    html_, found = NBCONVERT_MATHJAX.subn(lambda _: MATHJAX3_CONFIG, html_, count=1)  # no escapes in the script
    if not found:
        log.warning(f"{page.file.src_uri}: nbconvert's MathJax block not found; the page's $...$ will not be typeset")
    html_ = LINK.sub(lambda m: _fix_link(m, page, files), html_)
    headings = [
        {"level": int(m["level"]), "id": m["id"], "name": TAG.sub("", ANCHOR_LINK.sub("", m["inner"])).strip()}
        for m in HEADING.finditer(html_)
    ]
    page.toc = get_toc(nest_toc_tokens(headings))
    page.present_anchor_ids = set(ID.findall(html_))
    small = os.environ.get("C2F_NOTEBOOK_SMALL") == "1"  # as the notebooks read it
    index = files.get_file_from_path(NOTEBOOK_INDEX)
    more = f' How to run them yourself: <a href="{index.url_relative_to(page.file)}">Notebooks</a>.' if index else ""
    if small:
        setting = (
            "small settings (<code>C2F_NOTEBOOK_SMALL=1</code>): the same steps on smaller sizes, fewer images and "
            "shorter runs, so the numbers and figures differ from those of the full settings"
        )
    else:
        setting = "full settings"
    note = (
        f'<div class="admonition note"><p class="admonition-title">Outputs from the {"small" if small else "full"} '
        f"settings</p><p>The outputs on this page come from running the notebook when the site was built, in its "
        f'{setting}. <a href="{Path(page.file.src_uri).name}" download>Download the notebook</a> (stored without '
        f"outputs).{more}</p></div>"
    )
    head = re.search(r"</h1>", html_)
    at = head.end() if head else 0
    return html_[:at] + note + html_[at:]


def on_env(env: Any, config: Any, files: Files, **kwargs: Any) -> Any:
    # Every page is rendered now: check the anchors the notebooks link to, as mkdocs checks the Markdown pages'.
    for src_uri, file, anchor, url in _anchor_links:
        ids = file.page.present_anchor_ids if file.page else None
        if ids is not None and anchor not in ids:
            log.warning(f"{src_uri}: the link '{url}' is to an anchor that '{file.src_uri}' does not contain")
    return env


def on_post_build(config: Any, **kwargs: Any) -> None:
    import mathjax  # the django-static-mathjax package

    dest = Path(config["site_dir"]) / TARGET
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(mathjax.__file__).parent / MATHJAX, dest)
