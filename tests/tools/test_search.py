"""tools/search.py end to end on a trained synthetic DCMHT run: text->image and image->text search far above
chance, the exact backend against a brute-force ranking, appending, export, the figure, and every bad input as
a one-line error that leaves an existing index intact; an image-only model (WCH) on single-modal data."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from dataset.synthetic import concept_names
from models.trained import load_trained
from retrieval import sources
from retrieval.export import export_dtype
from retrieval.index import CodeIndex
from tests.stubs import snapshot
from tests.tools.conftest import run_json, search
from utils.checkpoint import load, save_atomic


def brute_force(index: CodeIndex, query_codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hamming distances by comparing unpacked bits, ranked by a stable sort (ties by item order)."""
    db = np.unpackbits(np.asarray(index.codes()), axis=1)
    dist = (np.unpackbits(query_codes, axis=1)[:, None, :] != db[None]).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), order


def failing(capsys, argv) -> str:
    """Run the tool expecting failure; its one-line message."""
    capsys.readouterr()
    assert search.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_text_queries_find_images_of_the_named_concept(image_index, capsys):
    queries = [arg for name in concept_names(10) for arg in ("--text", f"a photo of a {name}")]
    answers = run_json(capsys, ["query", str(image_index), *queries])
    index = CodeIndex(image_index)
    labels = [index.record(i)["labels"] for i in range(index.count)]
    frequency = np.mean([[concept in row for row in labels] for concept in range(10)])
    precision = np.mean([[concept in hit["labels"] for hit in answer["results"]]
                         for concept, answer in enumerate(answers)])
    assert precision > 2 * frequency, (precision, frequency)  # 0.49 against 0.18
    for answer in answers:
        assert [hit["rank"] for hit in answer["results"]] == list(range(1, 11))
        assert all(hit["path"].endswith(".png") for hit in answer["results"])


def test_image_queries_find_captions_sharing_labels(text_index, capsys):
    answers = run_json(capsys, ["query", str(text_index), "--split", "query", "--modality", "image", "--count", "50"])
    index = CodeIndex(text_index)
    labels = [set(index.record(i)["labels"]) for i in range(index.count)]
    chance = np.mean([np.mean([bool(set(a["query"]["labels"]) & row) for row in labels]) for a in answers])
    precision = np.mean([[hit["relevant"] for hit in a["results"]] for a in answers])
    assert precision > 1.6 * chance, (precision, chance)  # 0.56 against 0.30
    assert all("text" in hit for a in answers for hit in a["results"])


def test_flat_backend_equals_brute_force(image_index, text_index, capsys):
    index = CodeIndex(image_index)
    trained = load_trained(index.model["checkpoint"], "cpu")
    captions = [CodeIndex(text_index).record(i)["text"] for i in range(12)]
    query_codes = np.packbits(trained.encode_texts(captions).numpy() > 0, axis=1)
    answers = run_json(capsys, ["query", str(image_index), *[a for c in captions for a in ("--text", c)], "-k", "40"])
    dist, ids = brute_force(index, query_codes, 40)
    assert [[hit["id"] for hit in a["results"]] for a in answers] == ids.tolist()
    assert [[hit["distance"] for hit in a["results"]] for a in answers] == dist.tolist()
    radius = int(np.median(dist[:, 10]))
    within = run_json(capsys, ["query", str(image_index), "--text", captions[0], "-k", "40", "--radius", str(radius)])
    assert [hit["id"] for hit in within[0]["results"]] == ids[0][dist[0] <= radius].tolist()


def test_appending_equals_indexing_at_once(trained_run, text_index, tmp_path, capsys):
    captions = [CodeIndex(text_index).record(i)["text"] for i in range(30)]
    (tmp_path / "first.txt").write_text("\n".join(captions[:20]))
    (tmp_path / "rest.jsonl").write_text("\n".join(json.dumps({"text": c}) for c in captions[20:]))
    (tmp_path / "all.txt").write_text("\n".join(captions))
    base = ["index", "--checkpoint", str(trained_run), "--no-progress", "--batch-size", "8"]
    assert search.main([*base[:1], str(tmp_path / "split"), *base[1:], "--captions", str(tmp_path / "first.txt")]) == 0
    assert search.main([*base[:1], str(tmp_path / "split"), *base[1:], "--captions", str(tmp_path / "rest.jsonl"),
                        "--append"]) == 0
    assert search.main([*base[:1], str(tmp_path / "once"), *base[1:], "--captions", str(tmp_path / "all.txt")]) == 0
    split, once = CodeIndex(tmp_path / "split"), CodeIndex(tmp_path / "once")
    assert split.count == once.count == 30 and split.generation == 2
    for kind in ("codes", "items", "offsets"):
        assert split.file(kind).read_bytes() == once.file(kind).read_bytes()
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["codes.2.bin", "index.json", "items.2.jsonl",
                                                                       "offsets.2.bin"]
    query = ["--text", "a red circle", "-k", "30"]
    assert run_json(capsys, ["query", str(tmp_path / "split"), *query]) == run_json(
        capsys, ["query", str(tmp_path / "once"), *query])


def test_export_holds_ids_and_codes(image_index, tmp_path):
    index = CodeIndex(image_index)
    assert search.main(["export", str(image_index), str(tmp_path / "codes.parquet")]) == 0
    assert search.main(["export", str(image_index), str(tmp_path / "codes.bin")]) == 0
    table = pq.read_table(tmp_path / "codes.parquet").to_pydict()
    assert table["id"] == list(range(index.count))
    assert np.array_equal(np.array(table["code"], dtype=np.uint8), index.codes())
    flat = np.fromfile(tmp_path / "codes.bin", dtype=export_dtype(index.bits))
    assert flat["id"].tolist() == list(range(index.count)) and np.array_equal(flat["code"], index.codes())


def test_figure_of_labelled_queries(image_index, tmp_path):
    out = tmp_path / "figure.png"
    assert search.main(["figure", str(image_index), "--split", "query", "--modality", "text", "--count", "3",
                        "--image", str(CodeIndex(image_index).record(0)["path"]), "-o", str(out)]) == 0
    from PIL import Image
    with Image.open(out) as figure:
        assert figure.format == "PNG" and figure.width > figure.height > 300  # 4 rows of query + 5 results


def test_unreadable_images_are_named_and_skipped_only_on_request(trained_run, image_index, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        (folder / "sub" / f"{i}.png").write_bytes(open(CodeIndex(image_index).record(i)["path"], "rb").read())
    (folder / "broken.png").write_bytes(b"not a png at all")
    argv = ["index", str(tmp_path / "idx"), "--checkpoint", str(trained_run), "--images", str(folder), "--no-progress"]
    assert "broken.png" in failing(capsys, argv)
    assert list((tmp_path / "idx").glob("*")) == []  # nothing written (the folder may have been created)
    assert search.main([*argv, "--skip-bad-files"]) == 0
    assert "skipped" in capsys.readouterr().err
    index = CodeIndex(tmp_path / "idx")
    assert [index.record(i)["path"].rsplit("/", 2)[-2:] for i in range(3)] == [["sub", "0.png"], ["sub", "1.png"],
                                                                               ["sub", "2.png"]]
    assert "missing.png" in failing(capsys, ["query", str(image_index), "--image", str(tmp_path / "missing.png")])
    assert "'" + str(tmp_path / "nowhere") + "' not found" in failing(
        capsys, ["index", str(tmp_path / "other"), *argv[2:4], "--images", str(tmp_path / "nowhere")])


def test_bad_indexes_queries_and_checkpoints(trained_run, image_index, tmp_path, capsys, make_runner, small_run):
    assert "is not an index" in failing(capsys, ["query", str(tmp_path), "--text", "a red circle"])
    (tmp_path / "index.json").write_text("{not json")
    assert "not valid JSON" in failing(capsys, ["query", str(tmp_path), "--text", "a red circle"])
    assert "empty text query" in failing(capsys, ["query", str(image_index), "--text", "  "])
    assert "no query given" in failing(capsys, ["query", str(image_index)])
    assert "already holds an index" in failing(capsys, ["index", str(image_index), "--checkpoint", str(trained_run),
                                                        "--split", "query"])
    state = load(trained_run / "checkpoints" / "best.pt")
    state["model"] = {k: v + 1e-3 if v.is_floating_point() else v for k, v in state["model"].items()}
    save_atomic(state, tmp_path / "retrained.pt")
    assert "is not the checkpoint" in failing(capsys, ["query", str(image_index), "--checkpoint",
                                                       str(tmp_path / "retrained.pt"), "--text", "a red circle"])
    other = make_runner("configs/DCMHT/synthetic.yaml", small_run(**{"model.bits": 16}), None)
    save_atomic({**other.state_dict(), "model_context": other.model_context()}, tmp_path / "bits16.pt")
    err = failing(capsys, ["query", str(image_index), "--checkpoint", str(tmp_path / "bits16.pt"), "--text", "a"])
    assert "16 bits" in err and "32 bits" in err
    identity = {**CodeIndex(image_index).model, "method": "MITH"}
    with pytest.raises(ValueError, match="is MITH with 32 bits; index .* holds codes of DCMHT"):
        CodeIndex(image_index).check_model(identity)


def test_an_interrupted_index_leaves_the_old_one(trained_run, text_index, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "idx"
    (tmp_path / "captions.txt").write_text("\n".join(CodeIndex(text_index).record(i)["text"] for i in range(40)))
    argv = ["index", str(folder), "--checkpoint", str(trained_run), "--captions", str(tmp_path / "captions.txt"),
            "--no-progress", "--batch-size", "8"]
    assert search.main(argv) == 0
    before, answer = snapshot(folder), run_json(capsys, ["query", str(folder), "--text", "a red circle"])
    encode = sources.encode_batches

    def crashing(*args, **kwargs):
        for number, batch in enumerate(encode(*args, **kwargs)):
            if number == 2:
                raise OSError("simulated crash")
            yield batch

    monkeypatch.setattr(sources, "encode_batches", crashing)
    failing(capsys, [*argv, "--append"])
    failing(capsys, [*argv, "--overwrite"])
    assert snapshot(folder) == before
    monkeypatch.undo()

    def killed_at_commit(path, text):
        raise OSError("simulated kill before the manifest was replaced")

    monkeypatch.setattr("retrieval.index.atomic_write_text", killed_at_commit)
    (folder / ".codes.2.bin.abc.tmp").write_bytes(b"left by a killed writer")
    failing(capsys, [*argv, "--append"])
    failing(capsys, [*argv, "--overwrite"])
    assert run_json(capsys, ["query", str(folder), "--text", "a red circle"]) == answer
    monkeypatch.undo()
    assert search.main([*argv, "--append"]) == 0
    index = CodeIndex(folder)
    assert index.count == 80 and index.generation == 5  # 2 was the stray file's, 3 and 4 the uncommitted writes'
    assert sorted(p.name for p in folder.iterdir()) == ["codes.5.bin", "index.json", "items.5.jsonl", "offsets.5.bin"]


def test_an_image_only_model_indexes_and_queries_images_and_refuses_text(small_run, make_runner, tmp_path, capsys):
    """WCH (images only, single-modal data without captions): its split indexes with labels, an indexed image
    finds itself at distance 0 (encoded from its file as the evaluation did), a text query is one line."""
    runner = make_runner("configs/WCH/synthetic.yaml", small_run(**{"dataset.num_samples": 120,
                                                                    "dataset.query_num": 20,
                                                                    "dataset.train_num": 60}), None)
    save_atomic({**runner.state_dict(), "model_context": runner.model_context()}, tmp_path / "wch.pt")
    folder = tmp_path / "index"
    assert search.main(["index", str(folder), "--checkpoint", str(tmp_path / "wch.pt"), "--split", "query",
                        "--no-progress"]) == 0
    index = CodeIndex(folder)
    records = [index.record(i) for i in range(index.count)]
    assert index.count == 20 and all("caption" not in r and len(r["labels"]) == 1 for r in records)
    answer, = run_json(capsys, ["query", str(folder), "--image", records[7]["path"], "-k", "20"])
    assert {hit["id"]: hit["distance"] for hit in answer["results"]}[7] == 0
    assert "encodes images only" in failing(capsys, ["query", str(folder), "--text", "a red circle"])
