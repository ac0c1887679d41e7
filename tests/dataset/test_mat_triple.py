import logging
import os

import numpy as np
import pytest
import scipy.io

from dataset import mat_triple
from dataset.mat_triple import load_mat_key, read_mat_triple, write_mat_triple
from dataset.records import DatasetError, PairedData

COCO_CAPTIONS = [["a cat on a mat", "the cat sleeps"], ["two dogs"], ["a bus", "red bus", "bus in town"]]
COCO_LABELS = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=np.int64)


def _coco_like(tmp_path, jpegs):
    """A COCO-style triple (ragged captions, int64 labels) whose stored paths point to another machine."""
    names = ["train2017/000000000009.jpg", "train2017/000000000025.jpg", "val2017/000000000139.jpg"]
    jpegs(str(tmp_path / "images"), names)
    stored = [f"/home/someone/coco/{n}" for n in names]
    write_mat_triple(str(tmp_path), stored, COCO_CAPTIONS, COCO_LABELS)
    return names


def test_coco_layout_written_like_reference_builder(tmp_path, jpegs):
    _coco_like(tmp_path, jpegs)
    caption = scipy.io.loadmat(tmp_path / "caption.mat")["caption"]
    assert caption.shape == (1, 3) and caption.dtype == object
    assert [c.rstrip() for c in caption[0, 2]] == COCO_CAPTIONS[2]
    index = scipy.io.loadmat(tmp_path / "index.mat")["index"]
    assert index.shape == (3,) and index.dtype.kind == "U"
    category = scipy.io.loadmat(tmp_path / "label.mat")["category"]
    assert category.dtype == np.int64 and category.shape == (3, 3)


def test_roundtrip_with_image_root(tmp_path, jpegs):
    names = _coco_like(tmp_path, jpegs)
    data = read_mat_triple(str(tmp_path), image_root="images", path_keep=2, check_images="all")
    assert isinstance(data, PairedData) and len(data) == 3
    assert data.images == [os.path.join(str(tmp_path), "images", n) for n in names]
    assert data.captions == COCO_CAPTIONS
    assert data.labels.dtype == np.uint8 and (data.labels == COCO_LABELS).all()
    assert data.meta["keys"] == {"index": "index", "caption": "caption", "label": "category"}


def test_path_prefix_map_and_absolute_image_root(tmp_path, jpegs):
    names = _coco_like(tmp_path, jpegs)
    mapped = read_mat_triple(str(tmp_path), path_prefix_map={"/home/someone": "/elsewhere",
                                                            "/home/someone/coco": str(tmp_path / "images")})
    assert mapped.images[0] == str(tmp_path / "images") + "/" + names[0]
    absolute = read_mat_triple(str(tmp_path), image_root=str(tmp_path / "images"), path_keep=2)
    assert absolute.images == mapped.images


def test_mirflickr_layout_single_captions_and_empty_tags(tmp_path, jpegs, caplog):
    jpegs(str(tmp_path / "mirflickr"), ["im1.jpg", "im10.jpg"])
    scipy.io.savemat(tmp_path / "index.mat", {"index": ["/x/mirflickr/im1.jpg", "/x/mirflickr/im10.jpg"]})
    scipy.io.savemat(tmp_path / "caption.mat", {"caption": [["sky blue"], [""]]})
    scipy.io.savemat(tmp_path / "label.mat", {"category": np.array([[1.0, 0.0], [1.0, 1.0]])})
    assert scipy.io.loadmat(tmp_path / "caption.mat")["caption"].shape == (2, 1)
    with caplog.at_level(logging.WARNING):
        data = read_mat_triple(str(tmp_path), image_root=str(tmp_path / "mirflickr"), path_keep=1)
    assert data.captions == [["sky blue"], [""]]
    assert "1 of 2 rows have an empty caption" in caplog.text


def test_mith_layout(tmp_path, jpegs):
    jpegs(str(tmp_path / "flat"), ["COCO_val2014_000000522418.jpg", "COCO_val2014_000000000042.jpg"])
    scipy.io.savemat(tmp_path / "index.mat", {"index": ["/m/COCO_val2014_000000522418.jpg",
                                                          "/m/COCO_val2014_000000000042.jpg"]})
    scipy.io.savemat(tmp_path / "caption.mat", {"caption": ["a woman cutting a cake", "a dog"]})
    scipy.io.savemat(tmp_path / "label.mat", {"label": np.array([[0, 1], [1, 0]], dtype=np.float32)})
    data = read_mat_triple(str(tmp_path), image_root="flat", path_keep=1)
    assert data.captions == [["a woman cutting a cake"], ["a dog"]]
    assert data.meta["keys"]["label"] == "label"


def test_nuswide_caption_txt(tmp_path, jpegs):
    jpegs(str(tmp_path / "Flickr"), ["actor/0001_2124494179.jpg", "beach/0002_1.jpg"])
    write_mat_triple(str(tmp_path), ["/r/Flickr/actor/0001_2124494179.jpg", "/r/Flickr/beach/0002_1.jpg"],
                     [["actor film"], ["123456"]], np.array([[1, 0], [0, 1]], dtype=np.int8), caption_format="txt")
    assert (tmp_path / "caption.txt").read_text() == "actor film\n123456\n"
    data = read_mat_triple(str(tmp_path), caption_file="caption.txt", image_root="Flickr", path_keep=2,
                           check_images="all")
    assert data.captions == [["actor film"], ["123456"]]
    assert data.images[0].endswith(os.path.join("Flickr", "actor", "0001_2124494179.jpg"))


def test_relative_stored_paths_resolve_inside_root(tmp_path, jpegs):
    jpegs(str(tmp_path / "mirflickr"), ["im1.jpg"])
    write_mat_triple(str(tmp_path), ["mirflickr\\im1.jpg"], [["tag"]], np.array([[1]]))
    data = read_mat_triple(str(tmp_path), check_images="all")
    assert data.images == [os.path.join(str(tmp_path), "mirflickr/im1.jpg")]


def _variant_files(tmp_path, save, index_key, caption_key, label_key, cell_index):
    paths = ["/a/im1.jpg", "/a/im2.jpg", "/a/im3.jpg"]
    if cell_index:
        index = np.empty((3, 1), dtype=object)
        for i, p in enumerate(paths):
            index[i, 0] = [p]
    else:
        index = paths
    captions = np.empty((1, 3), dtype=object)
    for i, row in enumerate(COCO_CAPTIONS):
        captions[0, i] = list(row)
    save(str(tmp_path / "index.mat"), {index_key: index})
    save(str(tmp_path / "caption.mat"), {caption_key: captions})
    save(str(tmp_path / "label.mat"), {label_key: COCO_LABELS.astype(np.float64)})


@pytest.mark.parametrize("version", ["v5", "v7.3"])
@pytest.mark.parametrize("keys", [("index", "caption", "category", False), ("imgs", "tags", "LAll", False),
                                  ("FAll", "YAll", "labels", True), ("index", "caption", "label", True)])
def test_key_variants_and_versions(tmp_path, mat73, version, keys):
    save = mat73 if version == "v7.3" else scipy.io.savemat
    _variant_files(tmp_path, save, *keys)
    data = read_mat_triple(str(tmp_path), check_images="none")
    assert data.images == ["/a/im1.jpg", "/a/im2.jpg", "/a/im3.jpg"]
    assert data.captions == COCO_CAPTIONS
    assert (data.labels == COCO_LABELS).all()
    assert data.meta["keys"] == dict(zip(("index", "caption", "label"), keys[:3]))


def test_v73_transposes_like_scipy(tmp_path, mat73):
    labels = np.arange(12).reshape(4, 3) % 2
    mat73(str(tmp_path / "l.mat"), {"LAll": labels, "names": ["ab", "c"]})
    scipy.io.savemat(tmp_path / "l5.mat", {"LAll": labels, "names": ["ab", "c"]})
    for key in ("LAll", "names"):
        assert (load_mat_key(str(tmp_path / "l.mat"), (key,))[1] == load_mat_key(str(tmp_path / "l5.mat"),
                                                                              (key,))[1]).all()


def test_first_key_wins(tmp_path):
    scipy.io.savemat(tmp_path / "l.mat", {"labels": np.zeros((2, 2)), "category": np.eye(2)})
    key, value = load_mat_key(str(tmp_path / "l.mat"), mat_triple.LABEL_KEYS)
    assert key == "category" and (value == np.eye(2)).all()


def test_single_row_with_several_captions(tmp_path):
    cell = np.empty(1, dtype=object)
    cell[0] = ["first", "second"]
    scipy.io.savemat(tmp_path / "caption.mat", {"caption": cell})
    scipy.io.savemat(tmp_path / "index.mat", {"index": ["/a.jpg"]})
    scipy.io.savemat(tmp_path / "label.mat", {"category": np.ones((1, 2))})
    assert read_mat_triple(str(tmp_path), check_images="none").captions == [["first", "second"]]


def test_npy_image_array(tmp_path):
    images = np.random.RandomState(0).randint(0, 255, (3, 4, 4, 3)).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    write_mat_triple(str(tmp_path), ["x", "y", "z"], COCO_CAPTIONS, COCO_LABELS)
    data = read_mat_triple(str(tmp_path), index_file="images.npy")
    assert isinstance(data.images, np.ndarray) and (data.images == images).all()


def test_missing_images_reported_with_count_and_first(tmp_path, jpegs):
    names = [f"im{i}.jpg" for i in range(10)]
    jpegs(str(tmp_path / "img"), names[:6])
    write_mat_triple(str(tmp_path), [f"/old/{n}" for n in names], [[n] for n in names], np.ones((10, 1)))
    with pytest.raises(DatasetError, match=r"index\.mat: 4 of 10 checked image files do not exist \(first: .*im6\.jpg, "
                                           r".*im7\.jpg, .*im8\.jpg\); set dataset\.image_root"):
        read_mat_triple(str(tmp_path), image_root="img", path_keep=1, check_images="all")
    with pytest.raises(DatasetError, match=r"of 10 checked image files do not exist"):
        read_mat_triple(str(tmp_path), image_root="img", path_keep=1, check_images="sample")
    assert len(read_mat_triple(str(tmp_path), image_root="img", path_keep=1, check_images="none")) == 10


def test_row_count_mismatch(tmp_path):
    write_mat_triple(str(tmp_path), ["a", "b", "c"], COCO_CAPTIONS, COCO_LABELS)
    scipy.io.savemat(tmp_path / "label.mat", {"category": np.ones((2, 3))})
    with pytest.raises(DatasetError, match=r"row counts differ: .*index\.mat has 3 rows, .*caption\.mat 3, "
                                           r".*label\.mat 2; the three files"):
        read_mat_triple(str(tmp_path), check_images="none")


def test_labels_must_be_binary(tmp_path):
    write_mat_triple(str(tmp_path), ["a", "b", "c"], COCO_CAPTIONS, COCO_LABELS)
    scipy.io.savemat(tmp_path / "label.mat", {"category": np.array([[1, 0], [2, 0], [0, 1]])})
    with pytest.raises(DatasetError, match=r"label\.mat: key 'category' holds 1 values other than 0/1 \(first at row 1,"
                                           r" column 0: 2\)"):
        read_mat_triple(str(tmp_path), check_images="none")


def test_zero_label_rows(tmp_path, caplog):
    labels = np.array([[1, 0], [0, 0], [0, 0]])
    write_mat_triple(str(tmp_path), ["a", "b", "c"], COCO_CAPTIONS, labels)
    with caplog.at_level(logging.WARNING):
        assert len(read_mat_triple(str(tmp_path), check_images="none")) == 3
    assert "2 of 3 rows have no label" in caplog.text
    with pytest.raises(DatasetError, match=r"label\.mat: 2 of 3 rows have no label \(first rows: 1, 2\)"):
        read_mat_triple(str(tmp_path), check_images="none", zero_label_rows="error")
    dropped = read_mat_triple(str(tmp_path), check_images="none", zero_label_rows="drop")
    assert len(dropped) == 1 and dropped.ids == [0] and dropped.meta["dropped_rows"] == [1, 2]
    assert dropped.captions == [COCO_CAPTIONS[0]]


def test_wrong_key(tmp_path):
    write_mat_triple(str(tmp_path), ["a", "b", "c"], COCO_CAPTIONS, COCO_LABELS)
    scipy.io.savemat(tmp_path / "label.mat", {"classes": COCO_LABELS})
    with pytest.raises(DatasetError, match=r"label\.mat: none of the expected keys category, label, LAll, labels "
                                           r"found \(keys in file: classes\)"):
        read_mat_triple(str(tmp_path), check_images="none")


def test_missing_file_and_garbage_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset file not found: .*index\.mat"):
        read_mat_triple(str(tmp_path))
    (tmp_path / "bad.mat").write_bytes(b"not a mat file" * 20)
    with pytest.raises(DatasetError, match=r"bad\.mat: not a readable MATLAB \.mat file"):
        load_mat_key(str(tmp_path / "bad.mat"), ("index",))


def test_numeric_captions_rejected(tmp_path):
    write_mat_triple(str(tmp_path), ["a", "b", "c"], COCO_CAPTIONS, COCO_LABELS)
    scipy.io.savemat(tmp_path / "caption.mat", {"YAll": np.ones((3, 5))})
    with pytest.raises(DatasetError, match=r"caption\.mat: key 'YAll' holds a numeric \(3, 5\) matrix"):
        read_mat_triple(str(tmp_path), check_images="none")


def test_absolute_paths_need_path_keep(tmp_path):
    write_mat_triple(str(tmp_path), ["/a/b.jpg"], [["x"]], np.ones((1, 1)))
    with pytest.raises(DatasetError, match=r"stored path /a/b\.jpg is absolute; set dataset\.path_keep"):
        read_mat_triple(str(tmp_path), image_root="img")


def test_writer_is_atomic(tmp_path, monkeypatch):
    write_mat_triple(str(tmp_path), ["a", "b", "c"], COCO_CAPTIONS, COCO_LABELS)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_savemat = scipy.io.savemat

    def failing_savemat(f, variables):
        if "category" in variables:
            raise OSError("disk full")
        real_savemat(f, variables)

    monkeypatch.setattr(mat_triple.scipy.io, "savemat", failing_savemat)
    with pytest.raises(OSError, match="disk full"):
        write_mat_triple(str(tmp_path), ["x"], [["new"]], np.ones((1, 3)))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_writer_rejects_bad_rows(tmp_path):
    with pytest.raises(DatasetError, match="caption_format 'txt' stores one caption per row"):
        write_mat_triple(str(tmp_path), ["a", "b", "c"], COCO_CAPTIONS, COCO_LABELS, caption_format="txt")
    with pytest.raises(DatasetError, match=r"row counts differ: 2 image paths, 3 caption rows"):
        write_mat_triple(str(tmp_path), ["a", "b"], COCO_CAPTIONS, COCO_LABELS)
    with pytest.raises(DatasetError, match="caption row 1 must be a non-empty list"):
        write_mat_triple(str(tmp_path), ["a", "b"], [["x"], []], np.ones((2, 1)))


def _one_line_error(match, call, *args, **kwargs) -> str:
    with pytest.raises(DatasetError, match=match) as caught:
        call(*args, **kwargs)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def _cut(path, keep) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep if keep >= 0 else len(data) + keep])


@pytest.mark.parametrize("name", ["index.mat", "caption.mat", "label.mat"])
def test_truncated_mat_file_is_named(tmp_path, name):
    write_mat_triple(str(tmp_path), ["a", "b", "c"], COCO_CAPTIONS, COCO_LABELS)
    size = (tmp_path / name).stat().st_size
    _cut(tmp_path / name, size - 20)  # scipy: "could not read bytes", naming no file
    _one_line_error(rf"{name}: truncated MATLAB v5 \.mat file \({size - 20} of at least {size} bytes\); the "
                    rf"copy or download was cut short", read_mat_triple, str(tmp_path), check_images="none")
    _cut(tmp_path / name, 60)  # inside the 128-byte header
    _one_line_error(rf"{name}: truncated MATLAB \.mat file \(60 of at least 128 bytes\)", read_mat_triple,
                    str(tmp_path), check_images="none")
    (tmp_path / name).write_bytes(b"")
    _one_line_error(rf"{name}: empty file \(0 bytes\); expected a MATLAB \.mat file", read_mat_triple,
                    str(tmp_path), check_images="none")


def test_truncated_v73_file_is_named(tmp_path, mat73):
    _variant_files(tmp_path, mat73, "index", "caption", "category", False)
    size = (tmp_path / "caption.mat").stat().st_size
    for keep in (size - 100, 530, 300):  # in the data, in the HDF5 superblock, in MATLAB's 512-byte header
        _cut(tmp_path / "caption.mat", keep)
        _one_line_error(rf"caption\.mat: truncated MATLAB v7\.3 \.mat file \({keep} (of at least {size} )?bytes\)",
                        read_mat_triple, str(tmp_path), check_images="none")


def test_non_mat_file_is_named(tmp_path):
    write_mat_triple(str(tmp_path), ["a", "b", "c"], COCO_CAPTIONS, COCO_LABELS)
    (tmp_path / "index.mat").write_text("index\n/a.jpg\n")
    _one_line_error(r"index\.mat: not a readable MATLAB \.mat file \(.*\); expected a file written by "
                    r"scipy\.io\.savemat or MATLAB", read_mat_triple, str(tmp_path), check_images="none")


def test_non_utf8_caption_txt(tmp_path):
    write_mat_triple(str(tmp_path), ["a", "b"], [["actor film"], ["cafe"]], np.eye(2), caption_format="txt")
    (tmp_path / "caption.txt").write_bytes("actor film\ncafé\n".encode("latin-1"))
    _one_line_error(r"caption\.txt: not UTF-8 text at byte 14 \(line 2, byte b'\\xe9'\); expected one UTF-8 "
                    r"caption per line", read_mat_triple, str(tmp_path), caption_file="caption.txt",
                    check_images="none")
    (tmp_path / "caption.txt").write_bytes("\ufeffactor film\ncafé\n".encode("utf-8"))
    data = read_mat_triple(str(tmp_path), caption_file="caption.txt", check_images="none")
    assert data.captions == [["actor film"], ["café"]]


def test_truncated_npy_images(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((3, 4, 4, 3), np.uint8))
    write_mat_triple(str(tmp_path), ["x", "y", "z"], COCO_CAPTIONS, COCO_LABELS)
    size = (tmp_path / "images.npy").stat().st_size
    _cut(tmp_path / "images.npy", -10)
    _one_line_error(rf"images\.npy: truncated \.npy file \({size - 10} bytes, its header says {size}\)",
                    read_mat_triple, str(tmp_path), index_file="images.npy")
    (tmp_path / "images.npy").write_bytes(b"not numpy")
    _one_line_error(r"images\.npy: not a readable \.npy array \(.*\); expected uint8 images", read_mat_triple,
                    str(tmp_path), index_file="images.npy")


@pytest.mark.parametrize("mode", ["warn", "error", "drop"])
def test_all_zero_labels_are_refused(tmp_path, mode):
    write_mat_triple(str(tmp_path), ["a", "b", "c"], COCO_CAPTIONS, np.zeros((3, 4)))
    _one_line_error(r"label\.mat: no row has any label \(all 3 rows are zero\); check the file, or set "
                    r"dataset\.zero_label_rows: keep to train on it anyway", read_mat_triple, str(tmp_path),
                    check_images="none", zero_label_rows=mode)


def test_zero_label_rows_keep_is_silent(tmp_path, caplog):
    write_mat_triple(str(tmp_path), ["a", "b", "c"], COCO_CAPTIONS, np.zeros((3, 4)))
    with caplog.at_level(logging.WARNING):
        data = read_mat_triple(str(tmp_path), check_images="none", zero_label_rows="keep")
        assert len(data) == 3 and not data.labels.any()
        write_mat_triple(str(tmp_path), ["a", "b", "c"], COCO_CAPTIONS, np.array([[1, 0], [0, 0], [0, 0]]))
        assert len(read_mat_triple(str(tmp_path), check_images="none", zero_label_rows="keep")) == 3
    assert "no label" not in caplog.text
    with pytest.raises(DatasetError, match=r"zero_label_rows must be one of 'warn', 'error', 'drop', 'keep'"):
        read_mat_triple(str(tmp_path), check_images="none", zero_label_rows="ignore")
