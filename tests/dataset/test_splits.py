import numpy as np
import pytest

from dataset.records import DatasetError
from dataset.splits import SPLIT_PRESETS, load_split, make_split, save_split

# specs/datasets.md §2.1: np.random.seed(1814); perm = np.random.permutation(N)
REFERENCE = {
    20015: ([19460, 7831, 17831, 4237, 18120], [16, 3433, 17957, 18803, 14354], [18920, 661, 16146, 14228, 10854]),
    122218: ([110374, 106988, 64378, 99951, 94930], [47900, 644, 2816, 8035, 8716],
             [107011, 89315, 19235, 49095, 15843]),
    195834: ([57723, 167302, 18799, 22944, 102189], [79576, 101618, 86069, 164720, 146546],
             [94438, 35649, 103256, 79557, 139370]),
}


@pytest.mark.parametrize("num_rows", sorted(REFERENCE))
def test_seed_1814_presets_match_reference_permutation(num_rows):
    head, at5000, at5120 = REFERENCE[num_rows]
    clip = make_split(num_rows, "clip_hash")
    assert clip["query"][:5].tolist() == head
    assert clip["train"][:5].tolist() == at5000 and clip["retrieval"][:5].tolist() == at5000
    dchmt = make_split(num_rows, "dchmt")
    assert dchmt["query"][:5].tolist() == head
    assert dchmt["train"][:5].tolist() == at5120 and dchmt["retrieval"][:5].tolist() == at5120


@pytest.mark.parametrize("preset, dataset, num_rows, sizes", [
    ("clip_hash", "mirflickr", 20015, (5000, 10000, 15015)),
    ("dchmt", "mirflickr", 20015, (5120, 10240, 14895)),
    ("mith", "mirflickr", 20015, (2000, 10000, 18015)),
    ("clip_hash", "coco", 122218, (5000, 10000, 117218)),
    ("dchmt", "coco", 122218, (5120, 10240, 117098)),
    ("clip_hash", "nuswide", 195834, (5000, 10000, 190834)),
    ("dchmt", "nuswide", 195834, (5120, 10240, 190714)),
    ("mith", "nuswide", 190421, (2100, 10500, 188321)),
    ("classic", "nuswide", 195834, (2100, 10500, 193734)),
    ("torchcmh", "mirflickr", 20015, (2000, 10000, 18015)),
    ("dcmh_tf", "mirflickr", 20015, (2000, 10000, 18015)),
])
def test_documented_sizes_and_containment(preset, dataset, num_rows, sizes):
    split = make_split(num_rows, preset, dataset)
    assert tuple(len(split[k]) for k in ("query", "train", "retrieval")) == sizes
    assert all(split[k].dtype == np.int64 for k in split)
    assert np.isin(split["train"], split["retrieval"]).all()
    assert not np.intersect1d(split["query"], split["retrieval"]).size
    assert len(np.union1d(split["query"], split["retrieval"])) == num_rows


def test_seeds_and_file_order():
    assert (make_split(20015, "mith", "mirflickr")["query"] == np.random.RandomState(1).permutation(20015)[:2000]).all()
    assert (make_split(100, "classic", "coco", query_num=5, train_num=10)["query"]
            == np.random.RandomState(0).permutation(100)[:5]).all()
    assert (make_split(100, "torchcmh", "nuswide", query_num=5, train_num=10)["query"]
            == np.random.RandomState(7).permutation(100)[:5]).all()
    assert make_split(20015, "dcmh_tf", "mirflickr")["query"].tolist() == list(range(2000))


def test_explicit_values_override_preset():
    split = make_split(50, "clip_hash", query_num=5, train_num=10, seed=3)
    perm = np.random.RandomState(3).permutation(50)
    assert (split["query"] == perm[:5]).all() and (split["train"] == perm[5:15]).all()
    custom = make_split(50, "custom", query_num=5, train_num=10, seed=3)
    assert all((custom[k] == split[k]).all() for k in split)


def test_every_preset_documents_its_source():
    assert {"clip_hash", "dchmt", "mith", "classic", "custom"} <= set(SPLIT_PRESETS)
    assert all(p.source for p in SPLIT_PRESETS.values())


def test_bad_requests():
    with pytest.raises(DatasetError, match=r"needs query 5000 \+ train 10000 = 15000 rows .* the data has 100 rows"):
        make_split(100, "clip_hash", "coco")
    with pytest.raises(DatasetError, match=r"unknown split preset 'clip_hsh'; did you mean 'clip_hash'\?"):
        make_split(100, "clip_hsh")
    with pytest.raises(DatasetError, match="preset 'custom' needs query_num and train_num given explicitly"):
        make_split(100, "custom")
    with pytest.raises(DatasetError, match="preset 'custom' needs seed given explicitly"):
        make_split(100, "custom", query_num=1, train_num=1)
    with pytest.raises(DatasetError, match="preset 'mith' depends on the dataset"):
        make_split(100, "mith")
    with pytest.raises(DatasetError, match="unknown dataset 'flickr'"):
        make_split(100, "mith", "flickr")
    with pytest.raises(DatasetError, match="'dcmh_tf' takes the rows in file order and has no seed"):
        make_split(20015, "dcmh_tf", "mirflickr", seed=1)


def test_save_load_roundtrip(tmp_path):
    split = make_split(40, "custom", query_num=4, train_num=8, seed=5)
    path = tmp_path / "runs" / "split.npz"
    save_split(str(path), split)
    assert [p.name for p in path.parent.iterdir()] == ["split.npz"]
    loaded = make_split(40, split_file=str(path))
    assert all((loaded[k] == split[k]).all() and loaded[k].dtype == np.int64 for k in split)


def test_load_split_checks(tmp_path):
    path = str(tmp_path / "s.npz")
    save_split(path, make_split(40, "custom", query_num=4, train_num=8, seed=5))
    with pytest.raises(DatasetError, match=r"s\.npz: 'query' indexes rows up to \d+ but the data has 10 rows"):
        load_split(path, 10)
    np.savez(path, query=np.array([0, 1]), train=np.array([2]), retrieval=np.array([1, 2]))
    with pytest.raises(DatasetError, match="query and retrieval share rows"):
        load_split(path, 3)
    np.savez(path, query=np.array([0]))
    with pytest.raises(DatasetError, match="lacks train, retrieval"):
        load_split(path)
    with pytest.raises(FileNotFoundError, match="split file not found"):
        load_split(str(tmp_path / "none.npz"))
