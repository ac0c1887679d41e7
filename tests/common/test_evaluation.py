"""Tests of common/evaluation.py and of the tools built on it (evaluate_codes.py, plot_curves.py)."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from common import evaluation, metrics

ROOT = Path(__file__).resolve().parents[2]


def make_codes(seed=0, num_query=8, num_db=30, bits=6, classes=4):
    """Image and text codes that differ, so every direction gives its own numbers."""
    rng = np.random.default_rng(seed)

    def codes(rows):
        return torch.from_numpy(rng.choice([-1.0, 1.0], size=(rows, bits)).astype(np.float32))

    codes_ = {"query_image": codes(num_query), "query_text": codes(num_query),
              "retrieval_image": codes(num_db), "retrieval_text": codes(num_db)}
    labels = {"query": torch.from_numpy((rng.random((num_query, classes)) < 0.4).astype(np.float32)),
              "retrieval": torch.from_numpy((rng.random((num_db, classes)) < 0.4).astype(np.float32))}
    return codes_, labels


def test_evaluate_retrieval_directions_and_values():
    codes, labels = make_codes()
    cfg = evaluation.EvalConfig(map_topk=(None, 10), precision_k=(1, 5))
    results = evaluation.evaluate_retrieval(codes, labels, cfg)
    assert list(results) == ["i2t", "t2i", "i2i", "t2t"]
    assert list(results["i2t"]) == ["mAP@all", "mAP@all[tie]", "mAP@10", "P@1", "P@5", "R@1", "R@5",
                                    "NDCG@1", "NDCG@5", "num_zero_relevant", "num_zero_found@10"]
    for name, (query, retrieval) in evaluation.DIRECTIONS.items():
        args = (codes[query], codes[retrieval], labels["query"], labels["retrieval"])
        assert results[name]["mAP@all"] == pytest.approx(metrics.mean_average_precision(*args))
        assert results[name]["mAP@10"] == pytest.approx(metrics.mean_average_precision(*args, topk=10))
        assert results[name]["mAP@all[tie]"] == pytest.approx(
            metrics.mean_average_precision(*args, variant="tie_aware"))
        assert results[name]["P@5"] == pytest.approx(metrics.precision_at_k(*args, 5)[5])
        assert results[name]["NDCG@5"] == pytest.approx(metrics.ndcg_at_k(*args, 5)[5])
    # The roles are not symmetric: i2t (image queries, text database) differs from its swap.
    swapped = metrics.mean_average_precision(codes["retrieval_text"], codes["query_image"], labels["retrieval"],
                                             labels["query"])
    assert results["i2t"]["mAP@all"] != pytest.approx(swapped)


def test_evaluate_retrieval_default_config_and_selected_directions():
    codes, labels = make_codes()
    results = evaluation.evaluate_retrieval(codes, labels)
    assert {"mAP@all", "mAP@1000", "mAP@5000", "P@1000", "NDCG@10", "mAP@all[tie]"} <= set(results["t2i"])
    only = evaluation.evaluate_retrieval({k: codes[k] for k in ("query_text", "retrieval_image")}, labels,
                                         evaluation.EvalConfig(directions=("t2i",), tie_aware=False))
    assert list(only) == ["t2i"] and "mAP@all[tie]" not in only["t2i"]
    assert only["t2i"]["mAP@all"] == pytest.approx(results["t2i"]["mAP@all"])


def test_evaluate_retrieval_missing_keys_and_bad_config():
    codes, labels = make_codes()
    del codes["retrieval_text"]
    with pytest.raises(ValueError, match="codes must have the keys .* missing retrieval_text"):
        evaluation.evaluate_retrieval(codes, labels)
    with pytest.raises(ValueError, match="labels must have the keys .* missing retrieval"):
        evaluation.evaluate_retrieval(*make_codes()[:1], {"query": labels["query"]})
    for field, value, expected in [
        ("directions", ("x2y",), "a list, each item one of 'i2t', 't2i', 'i2i', 't2t'"),
        ("map_topk", (None, 0), "a list, each item a positive integer or null"),
        ("precision_k", (None,), "a list, each item a positive integer"),
        ("tie_break", "random", "one of 'index', 'reverse'"),
        ("chunk_size", 0, "a positive integer or null"),
    ]:
        with pytest.raises(ValueError, match=re.escape(f"EvalConfig.{field} = {value!r} must be {expected}")):
            evaluation.EvalConfig(**{field: value})


def test_format_table_lists_every_metric_per_direction():
    codes, labels = make_codes()
    results = evaluation.evaluate_retrieval(codes, labels, evaluation.EvalConfig(map_topk=(None,), precision_k=(5,)))
    table = evaluation.format_table(results)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "i2t", "t2i", "i2i", "t2t"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:-1]}
    assert set(rows) == set(results["i2t"])
    assert float(rows["mAP@all"][1]) == pytest.approx(results["t2i"]["mAP@all"], abs=5e-5)
    assert rows["num_zero_relevant"][0] == str(results["i2t"]["num_zero_relevant"])
    assert "index tie-break" in lines[-1]


def test_export_and_load_codes_mat_round_trip(tmp_path):
    codes, labels = make_codes()
    path = tmp_path / "codes" / "hash.mat"
    evaluation.export_codes_mat(path, codes, labels)
    assert [p.name for p in path.parent.iterdir()] == ["hash.mat"]  # no temporary file left behind
    raw = scipy.io.loadmat(str(path))
    assert {"q_img", "q_txt", "r_img", "r_txt", "q_l", "r_l"} <= set(raw)
    assert raw["q_img"].dtype == np.float32
    loaded_codes, loaded_labels = evaluation.load_codes_mat(path)
    for key in evaluation.CODE_KEYS:
        torch.testing.assert_close(loaded_codes[key], codes[key])
    for key in evaluation.LABEL_KEYS:
        torch.testing.assert_close(loaded_labels[key], labels[key])
    evaluation.export_codes_mat(path, *make_codes(seed=1))  # replacing an existing file
    torch.testing.assert_close(evaluation.load_codes_mat(path)[0]["query_text"], make_codes(seed=1)[0]["query_text"])


def test_load_codes_mat_errors_name_the_file(tmp_path):
    partial = tmp_path / "partial.mat"
    scipy.io.savemat(str(partial), {"q_img": np.ones((2, 4))})
    with pytest.raises(ValueError, match=r"partial.mat: missing the key\(s\) q_txt, r_img"):
        evaluation.load_codes_mat(partial)
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"not a mat file at all")
    with pytest.raises(ValueError, match="garbage.mat: not a readable MATLAB .mat file"):
        evaluation.load_codes_mat(garbage)
    with pytest.raises(ValueError, match="absent.mat: no such file"):
        evaluation.load_codes_mat(tmp_path / "absent.mat")


def test_save_curves_writes_csv_and_png(tmp_path):
    codes, labels = make_codes()
    written = evaluation.save_curves(codes, labels, tmp_path / "curves")
    names = sorted(p.name for p in written)
    assert names == sorted(f"{c}_{d}.{ext}" for c in ("pr", "topn") for d in ("i2t", "t2i") for ext in ("csv", "png"))
    assert all(p.stat().st_size > 0 for p in written)
    assert (tmp_path / "curves" / "pr_i2t.png").read_bytes()[:4] == b"\x89PNG"
    pr = evaluation.read_curve_csv(tmp_path / "curves" / "pr_t2i.csv")
    expected = metrics.pr_curve(codes["query_text"], codes["retrieval_image"], labels["query"], labels["retrieval"])
    for key, values in expected.items():
        np.testing.assert_allclose(pr[key], values, atol=1e-6)
    topn = evaluation.read_curve_csv(tmp_path / "curves" / "topn_i2t.csv")
    np.testing.assert_array_equal(topn["n"], [30])  # default grid capped at the 30-item database


def run_tool(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def load_tool(name):
    """The tool's module, for exercising its error paths in-process (one subprocess per tool is enough)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluate_codes_tool(tmp_path):
    codes, labels = make_codes()
    path = tmp_path / "codes.mat"
    evaluation.export_codes_mat(path, codes, labels)
    done = run_tool("tools/evaluate_codes.py", path, "--topk", "all", "10", "--precision-k", "1", "5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["metric", "i2t", "t2i", "i2i", "t2t"]
    cfg = evaluation.EvalConfig(map_topk=(None, 10), precision_k=(1, 5))
    results = evaluation.evaluate_retrieval(codes, labels, cfg)
    row = next(line for line in lines if line.startswith("mAP@10 "))
    assert float(row.split()[1]) == pytest.approx(results["i2t"]["mAP@10"], abs=5e-5)


def test_evaluate_codes_tool_errors(tmp_path, capsys):
    tool = load_tool("evaluate_codes")
    bad = tmp_path / "bad.mat"
    scipy.io.savemat(str(bad), {"q_img": np.zeros((2, 4)), "q_txt": np.ones((2, 4)), "r_img": np.ones((3, 4)),
                                "r_txt": np.ones((3, 4)), "q_l": np.ones((2, 2)), "r_l": np.ones((3, 2))})
    assert tool.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.mat" in err and "must hold only -1 and +1" in err
    assert tool.main([str(tmp_path / "absent.mat")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "absent.mat: no such file" in err


def test_plot_curves_tool(tmp_path):
    for scale, run in ((1.0, "run_a"), (0.5, "run_b")):  # the CSV files save_curves writes, without its PNGs
        folder = tmp_path / run / "curves"
        folder.mkdir(parents=True)
        for direction in ("i2t", "t2i"):
            evaluation.write_curve_csv(folder / f"pr_{direction}.csv", {
                "radius": np.arange(5), "precision_micro": scale * np.linspace(0.2, 1, 5),
                "recall_micro": np.linspace(0, 1, 5)})
            evaluation.write_curve_csv(folder / f"topn_{direction}.csv", {
                "n": np.array([200, 400]), "precision": scale * np.array([0.9, 0.8]), "recall": np.array([0.1, 0.2])})
    out = tmp_path / "compare"
    done = run_tool("tools/plot_curves.py", tmp_path / "run_a", tmp_path / "run_b", "--out", out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["pr_i2t.png", "pr_t2i.png", "topn_i2t.png", "topn_t2i.png"]


def test_plot_curves_tool_errors(tmp_path, capsys):
    tool = load_tool("plot_curves")
    assert tool.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing: no curves/ folder" in err
    (tmp_path / "empty" / "curves").mkdir(parents=True)
    assert tool.main([str(tmp_path / "empty")]) == 2
    assert "no curve files" in capsys.readouterr().err
    broken = tmp_path / "broken" / "curves"
    broken.mkdir(parents=True)
    (broken / "pr_i2t.csv").write_text("radius,precision_micro\n0,0.5\n")
    assert tool.main([str(tmp_path / "broken"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pr_i2t.csv: missing the column(s) recall_micro" in err
