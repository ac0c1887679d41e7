"""A local search page over one index: a text box and an image upload, the top-k results as thumbnails (or
captions) with their Hamming distances.

Server-rendered HTML (no script): ``GET /?q=...&k=...`` searches by text, ``POST /`` with an uploaded image
searches by image, ``GET /items/<id>`` returns the file of indexed image ``id``. Only files the index records
are ever served, looked up by item id, so no request names a path on disk. FastAPI parses the upload form
with python-multipart, a requirement it does not import until a form route is declared.
"""
from __future__ import annotations

import base64
import html
import io
import threading

import uvicorn
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse, HTMLResponse
from PIL import Image

from dataset.images import to_rgb
from retrieval.searcher import Hit, Searcher
from retrieval.sources import Item, texts

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
form { display: inline-block; margin: 0 1.5em 1em 0; }
.results { display: flex; flex-wrap: wrap; gap: 12px; }
.result { width: 150px; border: 3px solid #bbb; padding: 4px; font-size: 12px; }
.result.relevant { border-color: #1a9e3a; } .result.irrelevant { border-color: #d62728; }
.result img { width: 140px; height: 140px; object-fit: contain; background: #eee; display: block; }
.result blockquote { margin: 0; min-height: 60px; }
.query img { width: 96px; vertical-align: middle; }
.error { color: #d62728; }
"""


def _thumbnail(image: Image.Image) -> str:
    """A small inline copy of the uploaded query image (it is never stored)."""
    copy = image.copy()
    copy.thumbnail((128, 128))
    buffer = io.BytesIO()
    copy.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _result(hit: Hit) -> str:
    record = hit.record
    state = {True: " relevant", False: " irrelevant", None: ""}[hit.relevant]
    caption = record.get("caption") or record.get("path", "").rsplit("/", 1)[-1]
    if "text" in record:
        body = f"<blockquote>{html.escape(record['text'])}</blockquote>"
    else:
        body = f'<img src="/items/{hit.id}" alt="{html.escape(caption)}">'
    details = f"#{hit.rank} &middot; distance {hit.distance}"
    if "text" not in record and caption:
        details += f"<br>{html.escape(caption)}"
    return (f'<div class="result{state}" data-id="{hit.id}" data-distance="{hit.distance}">{body}'
            f'<div class="details">{details}</div></div>')


def _page(k: int, text: str = "", query_html: str = "", hits: list[Hit] | None = None, error: str = "") -> str:
    results = ""
    if hits is not None:
        shown = "".join(_result(hit) for hit in hits) or "<p>no results</p>"
        results = f'<p class="query">results for {query_html}</p><div class="results">{shown}</div>'
    if error:
        results = f'<p class="error">{html.escape(error)}</p>'
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>hash search</title>
<style>{STYLE}</style></head><body><h2>hash search</h2>
<form method="get" action="/"><input type="text" name="q" id="q" size="40" value="{html.escape(text)}"
 placeholder="describe what to find"><input type="hidden" name="k" value="{k}">
<button type="submit" id="search-text">search</button></form>
<form method="post" action="/" enctype="multipart/form-data"><input type="file" name="image" id="image"
 accept="image/*"><input type="hidden" name="k" value="{k}"><button type="submit" id="search-image">search by
 image</button></form>{results}</body></html>"""


def make_app(searcher: Searcher, k: int = 10) -> FastAPI:
    """The page's application over an opened :class:`Searcher` (queries are answered one at a time)."""
    app = FastAPI(title="hash search")
    lock = threading.Lock()

    def answer(query: Item, k: int, text: str = "", query_html: str = "") -> HTMLResponse:
        try:
            with lock:
                hits = searcher.search([query], k)[0]
        except ValueError as err:
            return HTMLResponse(_page(k, text, error=str(err)), status_code=400)
        return HTMLResponse(_page(k, text, query_html, hits))

    @app.get("/", response_class=HTMLResponse)
    def text_search(q: str = "", k: int = k) -> HTMLResponse:
        if not q.strip():
            return HTMLResponse(_page(k))
        return answer(next(texts([q])), k, q, f"&ldquo;{html.escape(q)}&rdquo;")

    @app.post("/", response_class=HTMLResponse)
    def image_search(image: UploadFile = File(...), k: int = Form(k)) -> HTMLResponse:
        try:
            with Image.open(io.BytesIO(image.file.read())) as opened:
                picture = to_rgb(opened)
        except (OSError, ValueError):
            return HTMLResponse(_page(k, error=f"the uploaded file {image.filename!r} is not an image"),
                                status_code=400)
        name = html.escape(image.filename or "upload")
        query = Item("image", {"path": image.filename or "upload"}, lambda: picture)
        return answer(query, k, query_html=f'<img src="{_thumbnail(picture)}" alt="{name}"> {name}')

    @app.get("/items/{item}")
    def item_file(item: int) -> FileResponse:
        if not 0 <= item < searcher.index.count:
            raise HTTPException(404, f"no item {item}")
        record = searcher.index.record(item)
        if "path" not in record or "text" in record:
            raise HTTPException(404, f"item {item} is not an image file")
        return FileResponse(record["path"])

    return app


def make_server(searcher: Searcher, host: str = "127.0.0.1", port: int = 8000, k: int = 10) -> uvicorn.Server:
    """A uvicorn server for the page (``.run()`` serves until interrupted)."""
    return uvicorn.Server(uvicorn.Config(make_app(searcher, k), host=host, port=port, log_level="warning"))
