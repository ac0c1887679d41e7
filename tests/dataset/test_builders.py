import json
import os

import numpy as np
import pytest
import scipy.io

from dataset.builders import build_coco, build_mirflickr, build_nuswide
from dataset.mat_triple import read_mat_triple
from dataset.records import DatasetError
from tools import prepare_data


# ---------------------------------------------------------------- MIRFlickr-25K


def _mirflickr_raw(root, jpegs, layout="qinlab"):
    """12 images; concept files list 6 of them; an _r1 file and README must be ignored."""
    image_dir = root / ("mirflickr25k/mirflickr" if layout == "qinlab" else "mirflickr")
    jpegs(str(image_dir), [f"im{k}.jpg" for k in range(1, 13)])
    tags = image_dir / "meta" / "tags"
    tags.mkdir(parents=True)
    for k in range(1, 13):
        (tags / f"tags{k}.txt").write_text({1: "sunset\nbeach\n", 2: "sky\n\ncloud\n", 10: ""}.get(k, f"tag{k}\n"))
    ann = root / "mirflickr25k_annotations_v080"
    ann.mkdir()
    (ann / "sky.txt").write_text("2\n11\n")
    (ann / "animals.txt").write_text("1\n10\n2\n")
    (ann / "people.txt").write_text("3\n12\n")
    (ann / "sky_r1.txt").write_text("5\n")
    (ann / "README.txt").write_text("annotations v080\n")
    return image_dir


def test_mirflickr_rows_labels_captions(tmp_path, jpegs):
    image_dir = _mirflickr_raw(tmp_path / "raw", jpegs)
    data = build_mirflickr(str(tmp_path / "raw"), str(tmp_path / "out"))
    assert data.ids == [1, 10, 11, 12, 2, 3]  # image numbers sorted as strings
    assert data.meta["label_names"] == ["animals", "people", "sky"]
    assert data.labels.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 1], [0, 1, 0]]
    assert data.captions == [["sunset beach"], [""], ["tag11"], ["tag12"], ["sky  cloud"], ["tag3"]]
    assert data.images[0] == str(image_dir / "im1.jpg")
    report = "\n".join(data.meta["report"])
    assert "kept 6 images listed in at least one label file; 6 of the 12 image files" in report
    assert "1 kept images have no tags" in report
    assert scipy.io.loadmat(tmp_path / "out" / "label.mat")["category"].dtype == np.float64
    assert scipy.io.loadmat(tmp_path / "out" / "caption.mat")["caption"].shape == (6, 1)

    back = read_mat_triple(str(tmp_path / "out"), check_images="all")
    assert back.images == data.images and back.captions == data.captions
    assert (back.labels == data.labels).all()


def test_mirflickr_dchmt_layout_and_listdir_order(tmp_path, jpegs):
    _mirflickr_raw(tmp_path / "raw", jpegs, layout="dchmt")
    data = build_mirflickr(str(tmp_path / "raw"), str(tmp_path / "out"), label_order="listdir")
    listed = [os.path.splitext(n)[0] for n in os.listdir(tmp_path / "raw" / "mirflickr25k_annotations_v080")
              if "_r1" not in n and "README" not in n]
    assert data.meta["label_names"] == listed and len(data) == 6


def test_mirflickr_missing_image(tmp_path, jpegs):
    image_dir = _mirflickr_raw(tmp_path / "raw", jpegs)
    (image_dir / "im3.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 of 6 image files do not exist \(first: .*im3\.jpg\)"):
        build_mirflickr(str(tmp_path / "raw"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    data = build_mirflickr(str(tmp_path / "raw"), str(tmp_path / "out"), missing_images="drop")
    assert len(data) == 5 and 3 not in data.ids
    assert any("dropped 1 rows whose image file is missing" in line for line in data.meta["report"])


def test_mirflickr_bad_annotation_line(tmp_path, jpegs):
    _mirflickr_raw(tmp_path / "raw", jpegs)
    (tmp_path / "raw" / "mirflickr25k_annotations_v080" / "sky.txt").write_text("2\nim11\n")
    with pytest.raises(DatasetError, match=r"sky\.txt: line 2 is 'im11'; expected a 1-based image number"):
        build_mirflickr(str(tmp_path / "raw"), str(tmp_path / "out"))


# ---------------------------------------------------------------- MS-COCO


def _coco_raw(root, jpegs):
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 90, "name": "toothbrush"}]
    splits = {
        "train2017": ({25: "000000000025.jpg", 9: "000000000009.jpg", 30: "000000000030.jpg"},
                      [(25, "A giraffe."), (9, "Food on a plate. "), (25, "Tall giraffe"), (9, "Lunch"), (30, "Empty")],
                      [(9, 90, 0), (25, 1, 1), (25, 3, 0), (9, 90, 0)]),
        "val2017": ({139: "000000000139.jpg"}, [(139, "A room")], [(139, 3, 0)]),
    }
    (root / "annotations").mkdir(parents=True)
    for split, (images, captions, instances) in splits.items():
        jpegs(str(root / split), list(images.values()))
        image_list = [{"id": i, "file_name": f} for i, f in images.items()]
        (root / "annotations" / f"captions_{split}.json").write_text(json.dumps({
            "images": image_list,
            "annotations": [{"id": n, "image_id": i, "caption": c} for n, (i, c) in enumerate(captions)]}))
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps({
            "images": image_list, "categories": categories,
            "annotations": [{"id": n, "image_id": i, "category_id": c, "iscrowd": crowd}
                            for n, (i, c, crowd) in enumerate(instances)]}))


def test_coco_rows_labels_captions(tmp_path, jpegs):
    _coco_raw(tmp_path / "raw", jpegs)
    data = build_coco(str(tmp_path / "raw"), str(tmp_path / "out"))
    assert data.ids == [9, 25, 139]
    assert data.captions == [["Food on a plate. ", "Lunch"], ["A giraffe.", "Tall giraffe"], ["A room"]]
    assert data.labels.tolist() == [[0, 0, 1], [1, 1, 0], [0, 1, 0]]
    assert data.images[2] == os.path.join(str(tmp_path / "raw"), "val2017", "000000000139.jpg")
    assert "train2017: 3 images, kept 2, dropped 1 without instance annotations" in data.meta["report"]
    assert scipy.io.loadmat(tmp_path / "out" / "label.mat")["category"].dtype == np.int64
    assert scipy.io.loadmat(tmp_path / "out" / "caption.mat")["caption"].shape == (1, 3)

    back = read_mat_triple(str(tmp_path / "out"), check_images="all")
    assert back.images == data.images and (back.labels == data.labels).all()
    assert back.captions == [[c.rstrip() for c in row] for row in data.captions]


def test_coco_missing_annotation_file(tmp_path, jpegs):
    _coco_raw(tmp_path / "raw", jpegs)
    (tmp_path / "raw" / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"COCO annotation file .*not found: .*instances_val2017\.json"):
        build_coco(str(tmp_path / "raw"), str(tmp_path / "out"))


# ---------------------------------------------------------------- NUS-WIDE


def _nuswide_raw(root, jpegs, label_names=("animal", "sky", "water"), used_list=True):
    rel = ["actor\\0001_11.jpg", "actor\\0002_12.jpg", "beach\\0003_13.jpg", "beach\\0004_14.jpg",
           "sky\\0005_15.jpg", "sky\\0006_16.jpg", "water\\0007_17.jpg"]
    jpegs(str(root / "Flickr"), [r.replace("\\", "/") for r in rel])
    (root / "ImageList").mkdir(parents=True)
    (root / "ImageList" / "Imagelist.txt").write_bytes("".join(f"{r}\r\n" for r in rel).encode())
    (root / "NUS_WID_Tags").mkdir()
    tags = ["11 actor film", "12", "", "13 sand  sea", "14 beach", "15 blue sky", "16 cloud", "17 lake"]
    (root / "NUS_WID_Tags" / "All_Tags.txt").write_text("\n".join(tags) + "\n")
    labels_dir = root / "Groundtruth" / "AllLabels"
    labels_dir.mkdir(parents=True)
    columns = {"animal": "1000000", "sky": "0000110", "water": "0001001"}
    for name in label_names:
        (labels_dir / f"Labels_{name}.txt").write_text("".join(f"{v}\n" for v in columns.get(name, "0000000")))
    if used_list:
        (root / "used_label.txt").write_text("".join(f"Labels_{n}.txt\n" for n in label_names))
    (root / "not-used-id.txt").write_text("3\n4\n")  # QinLab ids: rows 1 and 2 after the -2 offset


def test_nuswide_rows_labels_captions(tmp_path, jpegs):
    _nuswide_raw(tmp_path / "raw", jpegs)
    data = build_nuswide(str(tmp_path / "raw"), str(tmp_path / "out"))
    assert data.ids == [11, 14, 15, 16, 17]
    assert data.captions == [["actor film"], ["beach"], ["blue sky"], ["cloud"], ["lake"]]
    assert data.labels.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert data.images[0] == os.path.join(str(tmp_path / "raw" / "Flickr"), "actor/0001_11.jpg")
    assert any("dropped 2 rows listed in" in line and "value -2" in line for line in data.meta["report"])
    assert (tmp_path / "out" / "caption.txt").read_text().splitlines() == ["actor film", "beach", "blue sky",
                                                                           "cloud", "lake"]
    assert scipy.io.loadmat(tmp_path / "out" / "label.mat")["category"].dtype == np.int8

    back = read_mat_triple(str(tmp_path / "out"), caption_file="caption.txt", check_images="all")
    assert back.images == data.images and back.captions == data.captions
    assert (back.labels == data.labels).all()


def test_nuswide_offset_options(tmp_path, jpegs):
    _nuswide_raw(tmp_path / "raw", jpegs)
    data = build_nuswide(str(tmp_path / "raw"), str(tmp_path / "out"), not_used_offset=0)
    assert data.ids == [11, 12, 13, 16, 17]
    assert data.captions[1] == ["123456"] and data.captions[2] == ["sand sea"]
    (tmp_path / "raw" / "not-used-id.txt").write_text("9\n")
    with pytest.raises(DatasetError, match=r"value 9 maps to row 7, outside 0\.\.6 with not_used_offset -2"):
        build_nuswide(str(tmp_path / "raw"), str(tmp_path / "out"))
    unlabelled = build_nuswide(str(tmp_path / "raw"), str(tmp_path / "out"), row_filter="unlabelled")
    assert unlabelled.ids == [11, 14, 15, 16, 17]


def test_nuswide_builtin_label_list(tmp_path, jpegs):
    from dataset.builders.nuswide import USED_LABELS

    _nuswide_raw(tmp_path / "raw", jpegs, label_names=USED_LABELS, used_list=False)
    data = build_nuswide(str(tmp_path / "raw"), str(tmp_path / "out"))
    assert data.meta["label_names"] == list(USED_LABELS) and data.labels.shape == (5, 21)
    assert data.labels[:, USED_LABELS.index("water")].tolist() == [0, 1, 0, 0, 1]


def test_nuswide_line_count_mismatch(tmp_path, jpegs):
    _nuswide_raw(tmp_path / "raw", jpegs)
    (tmp_path / "raw" / "Groundtruth" / "AllLabels" / "Labels_sky.txt").write_text("0\n1\n")
    with pytest.raises(DatasetError, match=r"Labels_sky\.txt: 2 lines but .*Imagelist\.txt has 7"):
        build_nuswide(str(tmp_path / "raw"), str(tmp_path / "out"))


def test_prepare_data_cli_prints_report(tmp_path, jpegs, capsys):
    _nuswide_raw(tmp_path / "raw", jpegs)
    prepare_data.main(["nuswide", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                       "--not-used-offset", "0"])
    out = capsys.readouterr().out
    assert "label columns (3" in out and "kept 5 rows" in out and "wrote 5 rows" in out
    assert sorted(os.listdir(tmp_path / "out")) == ["caption.txt", "index.mat", "label.mat"]


def test_list_files_from_a_triple_serve_the_single_modal_reader(tmp_path, jpegs, capsys):
    """A NUS-WIDE pack (caption.txt) -> list files with paths relative to the image folder, read back."""
    _nuswide_raw(tmp_path / "raw", jpegs)
    prepare_data.main(["nuswide", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "triple"),
                       "--not-used-offset", "0"])
    triple = read_mat_triple(str(tmp_path / "triple"), caption_file="caption.txt")
    prepare_data.main(["lists", "--triple", str(tmp_path / "triple"), "--caption-file", "caption.txt",
                       "--out", str(tmp_path / "lists"), "--split", "custom", "--query-num", "2", "--train-num", "2",
                       "--seed", "0", "--relative-to", str(tmp_path / "raw" / "Flickr")])
    out = capsys.readouterr().out
    assert "split 'custom': 2 query, 2 train, 3 database rows of 5, 3 label columns" in out
    from dataset.cifar import read_list_split
    from dataset.splits import make_split
    data, split = read_list_split(str(tmp_path / "lists"), image_root=str(tmp_path / "raw" / "Flickr"),
                                  check_images="all")
    rows = make_split(5, preset="custom", query_num=2, train_num=2, seed=0)
    order = np.concatenate([rows["query"], rows["train"], rows["retrieval"]])
    assert data.images == [triple.images[i] for i in order]
    assert np.array_equal(data.labels, triple.labels[order])
    assert (len(split["query"]), len(split["train"]), len(split["retrieval"])) == (2, 2, 3)
    first = (tmp_path / "lists" / "test.txt").read_text().splitlines()[0].split()
    assert not os.path.isabs(first[0]) and len(first) == 4
