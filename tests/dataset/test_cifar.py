import pickle

import numpy as np
import pytest

from common.register import registry
from dataset import single_modal  # noqa: F401  (registers the cifar10 dataset)
from dataset.cifar import (CIFAR_BATCHES, cifar_split, load_cifar10, read_cifar10, read_cifar10_batches,
                           read_list_file, read_list_split)
from dataset.records import DatasetError
from models.base import Preprocess

PER_BATCH = 40  # 4 images per class per batch -> 24 per class over the six batches
NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _batches(per_batch=PER_BATCH):
    """(name, data (N, 3072) uint8 in CHW order, labels) of each official batch, the same for both formats."""
    rng = np.random.RandomState(0)
    for b, name in enumerate(CIFAR_BATCHES):
        data = rng.randint(0, 256, (per_batch, 3072)).astype(np.uint8)
        data[:, 0] = b  # red channel of pixel (0, 0) tells the batch
        yield name, data, [i % 10 for i in range(per_batch)]


def _write_batches(folder, python2_style=True, per_batch=PER_BATCH):
    """Official python layout: pickled dicts with bytes keys, data (N, 3072) uint8 in CHW order, labels a list."""
    folder.mkdir(parents=True)
    for name, data, labels in _batches(per_batch):
        raw = pickle.dumps({b"batch_label": name.encode(), b"labels": labels, b"data": data}, protocol=2)
        if python2_style:  # the official files were written by numpy 1 under Python 2
            raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        (folder / name).write_bytes(raw)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in NAMES]}, protocol=2))


def _write_binary(folder, per_batch=PER_BATCH):
    """Official binary layout: <batch>.bin of 3,073-byte records (label byte, then the CHW pixels)."""
    folder.mkdir(parents=True)
    for name, data, labels in _batches(per_batch):
        (folder / f"{name}.bin").write_bytes(np.concatenate([np.array(labels, np.uint8)[:, None], data], 1).tobytes())
    (folder / "batches.meta.txt").write_text("".join(f"{n}\n" for n in NAMES) + "\n")


def test_read_batches(tmp_path):
    _write_batches(tmp_path / "cifar-10-batches-py")
    data = read_cifar10_batches(str(tmp_path))
    assert data.images.shape == (6 * PER_BATCH, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.images[0, 0, 0, 0] == 0 and data.images[-1, 0, 0, 0] == 5  # train batches first, test last
    assert data.labels.shape == (6 * PER_BATCH, 10) and (data.labels.sum(axis=1) == 1).all()
    assert data.labels[13].argmax() == 3
    assert data.meta["label_names"][9] == "truck"
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes(), encoding="bytes")
    assert (data.images[1] == raw[b"data"][1].reshape(3, 32, 32).transpose(1, 2, 0)).all()


def test_protocols(tmp_path):
    _write_batches(tmp_path / "cifar-10-batches-py", python2_style=False)
    labels = read_cifar10_batches(str(tmp_path)).labels
    big = np.repeat(labels, 250, axis=0)  # 60,000 rows, 6,000 per class like the real set
    sizes = {"cifar10": (1000, 5000, 54000), "cifar10-1": (1000, 5000, 59000), "cifar10-2": (10000, 50000, 50000)}
    for protocol, expected in sizes.items():
        split = cifar_split(big, protocol, seed=0)
        assert tuple(len(split[k]) for k in ("query", "train", "retrieval")) == expected
        assert not np.intersect1d(split["query"], split["retrieval"]).size
        query_classes = big[split["query"]].argmax(axis=1)
        assert (np.bincount(query_classes) == expected[0] // 10).all()
        assert (np.diff(query_classes) >= 0).all()  # concatenated class by class
    one = cifar_split(big, "cifar10-1", seed=0)
    assert (one["retrieval"][:5000] == one["train"]).all()
    assert (cifar_split(big, "cifar10-2")["retrieval"] == cifar_split(big, "cifar10-2")["train"]).all()
    rng = np.random.RandomState(0)
    first_class = np.flatnonzero(big.argmax(axis=1) == 0)
    assert (cifar_split(big, "cifar10", 0)["query"][:100] == first_class[rng.permutation(6000)][:100]).all()


def test_protocol_errors(tmp_path):
    _write_batches(tmp_path / "b")
    with pytest.raises(DatasetError, match=r"'cifar10' needs 100 \+ 500 images of class 0, but the data has 24"):
        load_cifar10(str(tmp_path / "b"), "cifar10")
    labels = read_cifar10_batches(str(tmp_path / "b")).labels
    with pytest.raises(DatasetError, match="unknown CIFAR protocol 'cifar100'"):
        cifar_split(labels, "cifar100")


def test_unsafe_or_missing_batch(tmp_path):
    _write_batches(tmp_path / "b")
    (tmp_path / "b" / "test_batch").write_bytes(b"cos\nsystem\n(S'true'\ntR.")  # would run a shell command
    with pytest.raises(DatasetError, match=r"test_batch: not a CIFAR-10 python batch \(class os\.system is not"):
        read_cifar10_batches(str(tmp_path / "b"))
    (tmp_path / "b" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 batch not found: .*test_batch"):
        read_cifar10_batches(str(tmp_path / "b"))


def test_list_files(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "test.txt").write_text("im1.jpg 0 1 0\nim2.jpg 1 0 0\n")
    (tmp_path / "lists" / "train.txt").write_text("im3.jpg 0 0 1\n")
    (tmp_path / "lists" / "database.txt").write_text("im3.jpg 0 0 1\nim4.jpg 1 1 0\n\n")
    data, split = read_list_split(str(tmp_path / "lists"), "/data/mirflickr/", check_images="none")
    assert data.images == ["/data/mirflickr/im1.jpg", "/data/mirflickr/im2.jpg", "/data/mirflickr/im3.jpg",
                           "/data/mirflickr/im3.jpg", "/data/mirflickr/im4.jpg"]
    assert data.labels.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1], [1, 1, 0]]
    assert {k: v.tolist() for k, v in split.items()} == {"query": [0, 1], "train": [2], "retrieval": [3, 4]}


def test_list_file_errors(tmp_path):
    (tmp_path / "a.txt").write_text("im1.jpg 0 1\nim2.jpg 1\n")
    with pytest.raises(DatasetError, match=r"a\.txt: line 2 has 1 labels, line 1 has 2"):
        read_list_file(str(tmp_path / "a.txt"))
    (tmp_path / "b.txt").write_text("im1.jpg 0 2\n")
    with pytest.raises(DatasetError, match=r"b\.txt: line 1 is 'im1\.jpg 0 2'; expected '<image path> <0/1> \.\.\.'"):
        read_list_file(str(tmp_path / "b.txt"))


def test_binary_batches_read_as_the_python_batches(tmp_path):
    _write_batches(tmp_path / "py" / "cifar-10-batches-py")
    _write_binary(tmp_path / "bin" / "cifar-10-batches-bin")
    python, binary = read_cifar10(str(tmp_path / "py")), read_cifar10(str(tmp_path / "bin"))
    assert python.meta["format"] == "cifar10_python" and binary.meta["format"] == "cifar10_binary"
    assert np.array_equal(python.images, binary.images) and np.array_equal(python.labels, binary.labels)
    assert binary.meta["label_names"] == list(NAMES)
    assert np.array_equal(read_cifar10(str(tmp_path / "bin" / "cifar-10-batches-bin")).images, binary.images)


@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_protocol_counts_through_the_registered_dataset(fmt, tmp_path):
    """A 7,020-image CIFAR-10 (702 per class) in each real format: cifar10 and cifar10-1 give their exact query
    and train counts; cifar10-2 needs the full 6,000 per class (its counts are checked on 60,000 labels above)."""
    per_batch = 1170  # labels i % 10: 117 of each class per batch
    writer = _write_batches if fmt == "python" else _write_binary
    writer(tmp_path / f"cifar-10-batches-{'py' if fmt == 'python' else 'bin'}", per_batch=per_batch)
    build = registry.get("dataset", "cifar10")
    preprocess = Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), None)
    total = 6 * per_batch
    for protocol, database in (("cifar10", total - 6000), ("cifar10-1", total - 1000)):
        data = build(preprocess, root=str(tmp_path), protocol=protocol)
        assert (len(data.query), len(data.train), len(data.retrieval)) == (1000, 5000, database)
        assert (data.query.labels.sum(0) == 100).all() and (data.train.labels.sum(0) == 500).all()
        assert data.num_classes == 10 and data.meta["protocol"] == protocol
        train, query = data.train[0], data.query[0]
        assert set(train) == {"image", "image2", "label", "index"} and set(query) == {"image", "label", "index"}
    with pytest.raises(DatasetError, match=r"'cifar10-2' needs 1000 \+ 5000 images of class 0, but the data has 702"):
        build(preprocess, root=str(tmp_path), protocol="cifar10-2")


def test_missing_or_broken_binary_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    _write_binary(folder)
    (folder / "data_batch_3.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(DatasetError, match=r"data_batch_3\.bin: 3000 bytes is not a whole number of 3073-byte"):
        read_cifar10(str(tmp_path))
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 batch not found: .*data_batch_3\.bin \(extract "
                                                r"cifar-10-binary\.tar\.gz there\)"):
        read_cifar10(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no CIFAR-10 batches in .*empty: expected cifar-10-batches-py/"):
        read_cifar10(str(tmp_path / "empty"))
