"""The report's Markdown as one self-contained HTML page: rendered by Python-Markdown (tables extension), images
inlined.

Why a library: the report's Markdown (tables, headings, inline code, emphasis, images) is rendered the way any
Markdown viewer renders report.md. Why inlined: report.html is one file to send or open anywhere, so every image it
shows is a `data:` URI and nothing points outside it; an image whose file is missing is left out.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as etree
from pathlib import Path

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}"
         "th{background:#f3f3f3}img{max-width:100%;image-rendering:pixelated}code{background:#f3f3f3;padding:1px 4px}")
IMAGE_TYPES = {".gif": "image/gif", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def markdown_to_html(text: str, run: Path) -> str:
    """The Markdown `text` as a whole HTML page, its images (paths relative to the run folder `run`) inlined."""
    converter = markdown.Markdown(extensions=["tables", _InlineImages(run)], output_format="html")
    # the report's text comes from results and file names, never meant as HTML: escape it, as plain text
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    body = converter.convert(text)
    return "\n".join(["<!doctype html><html><head><meta charset='utf-8'><title>genie-redux report</title>",
                      f"<style>{STYLE}</style></head><body>", body, "</body></html>"])


class _InlineImages(Extension):
    """Registers `_ImagesAsData` for one run folder."""

    def __init__(self, run: Path) -> None:
        super().__init__()
        self.run = run

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 - Python-Markdown's name
        md.treeprocessors.register(_ImagesAsData(md, self.run), "inline_images", 0)


class _ImagesAsData(Treeprocessor):
    """Each <img> of a file in the run becomes a data: URI; one whose file is missing is removed (its text kept)."""

    def __init__(self, md: markdown.Markdown, folder: Path) -> None:
        super().__init__(md)
        self.folder = folder  # the run folder the images' paths are relative to (`run` is the hook's name)

    def run(self, root: etree.Element) -> None:
        for parent in list(root.iter()):
            for index, child in reversed(list(enumerate(parent))):
                if child.tag != "img":
                    continue
                target = self.folder / child.get("src", "")
                if target.is_file():
                    kind = IMAGE_TYPES.get(target.suffix.lower(), "image/png")
                    child.set("src", f"data:{kind};base64,{base64.b64encode(target.read_bytes()).decode()}")
                else:
                    _remove_keeping_tail(parent, index)


def _remove_keeping_tail(parent: etree.Element, index: int) -> None:
    """Remove `parent[index]`, keeping the text that followed it (ElementTree stores it on the element)."""
    child = parent[index]
    if child.tail:
        if index > 0:
            parent[index - 1].tail = (parent[index - 1].tail or "") + child.tail
        else:
            parent.text = (parent.text or "") + child.tail
    parent.remove(child)
