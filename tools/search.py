"""Put a trained model to work: index a collection, search it by text or image, draw the results, serve a page.

    python tools/search.py index runs/demo/index-img --checkpoint runs/demo --split retrieval --modality image
    python tools/search.py index runs/demo/index-txt --checkpoint runs/demo --captions captions.txt
    python tools/search.py index photos.idx --checkpoint runs/x/checkpoints/best.pt --images ~/photos --append
    python tools/search.py query runs/demo/index-img --text "a red circle" -k 10 [--json]
    python tools/search.py query runs/demo/index-txt --image photo.jpg --radius 4
    python tools/search.py figure runs/demo/index-img --split query --modality text --count 4 -o figure.png
    python tools/search.py serve runs/demo/index-img --port 8000
    python tools/search.py export runs/demo/index-img codes.parquet

An index holds one modality (the images or the captions of a collection); queries of either modality search
it, encoded by the model that wrote it (recorded in the index; ``--checkpoint`` must name that same file).
Backends: ``flat`` (exact, default), ``multihash`` (exact radius search), ``hnsw`` and ``ivf`` (approximate),
with ``--param key=value`` (retrieval/backends.py). Any error ends with one line on stderr and exit code 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.config import parse_yaml  # noqa: E402
from main import exit_code  # noqa: E402
from models.trained import load_trained  # noqa: E402
from retrieval import backends, sources  # noqa: E402
from retrieval.index import CodeIndex, open_for_writing, write_index  # noqa: E402
from retrieval.searcher import Searcher, model_for  # noqa: E402
from utils.logging import get_logger, setup_logging  # noqa: E402


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, parse_yaml(value)


def _add_model(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--checkpoint", required=required, metavar="CKPT",
                        help="checkpoint file, or run directory (its checkpoints/best.pt)"
                             + ("" if required else "; default: the one the index records"))
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _add_queries(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", help="index directory")
    _add_model(parser, required=False)
    parser.add_argument("--text", action="append", default=[], help="a text query (repeatable)")
    parser.add_argument("--text-file", help="text queries, one per line (or .jsonl with 'text', 'labels')")
    parser.add_argument("--image", action="append", default=[], help="an image query, or a folder (repeatable)")
    parser.add_argument("--split", choices=("train", "query", "retrieval"),
                        help="queries from this split of the model's dataset (with labels)")
    parser.add_argument("--modality", choices=sources.MODALITIES, default="text", help="modality of --split")
    parser.add_argument("--count", type=_positive, default=5, help="queries taken from --split")
    parser.add_argument("-k", type=_positive, default=10, help="results per query")
    parser.add_argument("--radius", type=int, help="only results within this Hamming distance")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="encode a collection into an index directory")
    index.add_argument("index", help="index directory to create (or to add to, with --append)")
    _add_model(index, required=True)
    source = index.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of images (recursive)")
    source.add_argument("--captions", help="text file (one caption per line) or .jsonl ('text', 'labels')")
    source.add_argument("--split", choices=("train", "query", "retrieval"), help="split of the model's dataset")
    index.add_argument("--modality", choices=sources.MODALITIES, default="image", help="modality of --split")
    index.add_argument("--append", action="store_true", help="add the items to an existing index")
    index.add_argument("--overwrite", action="store_true", help="replace an existing index")
    index.add_argument("--backend", choices=list(backends.BACKENDS), help="search backend (default flat; "
                       "an appended index keeps its own)")
    index.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                       help="backend parameter, e.g. m=32 (hnsw), nprobe=32 (ivf), nhash=8 (multihash)")
    index.add_argument("--batch-size", type=_positive, default=64)
    index.add_argument("--workers", type=_positive, default=4, help="threads decoding images")
    index.add_argument("--skip-bad-files", action="store_true",
                       help="leave out (and log) images that cannot be read instead of stopping")
    index.add_argument("--no-progress", action="store_true")

    query = commands.add_parser("query", help="print the top-k items of each query")
    _add_queries(query)
    query.add_argument("--json", action="store_true", help="print JSON instead of a table")

    figure = commands.add_parser("figure", help="draw queries and their top-k results into a PNG")
    _add_queries(figure)
    figure.add_argument("-o", "--output", required=True, help="PNG file to write")
    figure.set_defaults(k=5)

    serve = commands.add_parser("serve", help="a local search page")
    serve.add_argument("index", help="index directory")
    _add_model(serve, required=False)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("-k", type=_positive, default=12)

    export = commands.add_parser("export", help="write ids and packed codes to .parquet or .bin")
    export.add_argument("index", help="index directory")
    export.add_argument("output", help="file ending in .parquet or .bin")
    return parser.parse_args(argv)


def run_index(args: argparse.Namespace) -> None:
    folder = Path(args.index)
    base = open_for_writing(folder, args.append, args.overwrite)
    trained = load_trained(args.checkpoint, args.device)
    if base is not None:
        base.check_model(trained.identity())
        if args.backend not in (None, base.backend.name) or args.param:
            raise ValueError(f"index '{folder}' uses the {base.backend.name} backend with {base.backend.params()}; "
                             f"appending keeps it (leave out --backend and --param)")
    backend = base.backend if base is not None else backends.make_backend(args.backend or "flat", dict(args.param))
    if args.images:
        items, modality = sources.image_folder(args.images), "image"
    elif args.captions:
        items, modality = sources.caption_file(args.captions), "text"
    else:
        items, modality = sources.dataset_split(trained, args.split, args.modality), args.modality
    if base is not None and base.modality != modality:
        raise ValueError(f"index '{folder}' holds {base.modality} items; {modality} items cannot join it")
    batches = ((codes, [item.record for item in batch]) for codes, batch in sources.encode_batches(
        trained, items, args.batch_size, args.workers, args.skip_bad_files, not args.no_progress))
    index = write_index(folder, trained.identity(), modality, backend, batches, base)
    get_logger().info(f"index '{folder}': {index.count} {modality} items, {index.bits}-bit codes, "
                      f"{backend.name} backend")


def query_items(args: argparse.Namespace, searcher: Searcher) -> list[sources.Item]:
    items = list(sources.texts(args.text))
    if args.text_file:
        items += list(sources.caption_file(args.text_file))
    items += list(sources.images(args.image))
    if args.split:
        items += list(sources.dataset_split(searcher.model, args.split, args.modality, args.count))
    return items


def open_searcher(args: argparse.Namespace) -> Searcher:
    index = CodeIndex(args.index)
    return Searcher(index, model_for(index, args.checkpoint, args.device))


def format_table(queries: list[sources.Item], results) -> str:
    lines = []
    for query, hits in zip(queries, results):
        lines.append(f"{query.modality} query: {query.shown}")
        lines.append(f"{'rank':>4}  {'id':>7}  {'dist':>4}  {'rel':>3}  item")
        for hit in hits:
            relevant = {True: "yes", False: "no", None: "-"}[hit.relevant]
            labels = f"  labels {hit.record['labels']}" if "labels" in hit.record else ""
            shown = hit.record.get("text") or hit.record.get("path", "")
            lines.append(f"{hit.rank:>4}  {hit.id:>7}  {hit.distance:>4}  {relevant:>3}  {shown}{labels}")
        if not hits:
            lines.append("      (no item within the radius)")
        lines.append("")
    return "\n".join(lines)


def run_query(args: argparse.Namespace) -> None:
    searcher = open_searcher(args)
    queries = query_items(args, searcher)
    results = searcher.search(queries, args.k, args.radius)
    if args.command == "figure":
        from retrieval.figure import results_figure
        get_logger().info(f"figure written to {results_figure(queries, results, args.output)}")
    elif args.json:
        print(json.dumps([{"query": query.record, "modality": query.modality,
                           "results": [hit.as_dict() for hit in hits]} for query, hits in zip(queries, results)],
                         indent=2, ensure_ascii=False))
    else:
        print(format_table(queries, results))


def run_serve(args: argparse.Namespace) -> None:
    from retrieval.server import make_server
    searcher = open_searcher(args)
    get_logger().info(f"serving '{args.index}' on http://{args.host}:{args.port}/ (Ctrl-C stops)")
    make_server(searcher, args.host, args.port, args.k).run()


def run_export(args: argparse.Namespace) -> None:
    from retrieval.export import export
    get_logger().info(f"exported to {export(CodeIndex(args.index), args.output)}")


COMMANDS = {"index": run_index, "query": run_query, "figure": run_query, "serve": run_serve, "export": run_export}


def main(argv=None) -> int:
    args = parse_args(argv)
    for handler in setup_logging().handlers:  # stdout carries the results (--json); log lines go to stderr
        handler.setStream(sys.stderr)
    return exit_code(lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
