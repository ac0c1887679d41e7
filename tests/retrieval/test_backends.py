"""The faiss backends against brute force on tie-heavy random codes: the exact ones give exactly the stable
ranking (ties by item order), the approximate ones record their parameters and find nearly all true
neighbours of clustered codes."""
import numpy as np
import pytest

from retrieval import backends
from retrieval.index import write_index


def hamming(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return (np.unpackbits(queries, axis=1)[:, None, :] != np.unpackbits(codes, axis=1)[None]).sum(-1)


@pytest.fixture(scope="module")
def codes():
    """5,000 16-bit codes over few distinct values (so distances tie a lot) and 40 queries."""
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, size=(64, 2), dtype=np.uint8)
    return pool[rng.integers(0, 64, size=5000)], rng.integers(0, 256, size=(40, 2), dtype=np.uint8)


@pytest.mark.parametrize("name", ["flat", "multihash"])
def test_exact_backends_rank_like_brute_force(codes, name):
    db, queries = codes
    dist = hamming(queries, db)
    order = np.argsort(dist, axis=1, kind="stable")
    index = backends.build(backends.make_backend(name), db)
    for k in (1, 7, 300, 5000):
        found_dist, found_ids = backends.top_k(index, queries, k)
        assert np.array_equal(found_ids, order[:, :k]) and np.array_equal(found_dist, np.sort(dist, 1)[:, :k])
    for radius in (0, 3, 5):
        for row, (found_dist, found_ids) in enumerate(backends.within(index, queries, radius, 200)):
            expected = order[row][dist[row][order[row]] <= radius][:200]
            assert np.array_equal(found_ids, expected) and np.array_equal(found_dist, dist[row][expected])


def test_sharded_flat_merges_shards_in_item_order(codes):
    db, queries = codes
    one = backends.ShardedFlat(16, len(db), shards=1)
    three = backends.ShardedFlat(16, len(db), shards=3)
    for start in range(0, len(db), 700):  # chunks that straddle the shard bounds
        one.add(db[start:start + 700])
        three.add(db[start:start + 700])
    assert [s.ntotal for s in three.shards] == [1666, 1667, 1667]
    assert all(np.array_equal(a, b) for a, b in zip(one.search(queries, 50), three.search(queries, 50)))


@pytest.mark.parametrize("name, params", [("hnsw", {"m": 8, "ef_search": 64}), ("ivf", {"nlist": 16, "nprobe": 16}),
                                          ("ivf", {}), ("multihash", {"nhash": 8})])
def test_stored_backends_record_their_parameters(name, params, tmp_path):
    rng = np.random.default_rng(1)
    centers = rng.integers(0, 256, size=(16, 8), dtype=np.uint8)
    db = centers[rng.integers(0, 16, size=2000)] ^ np.packbits(rng.random((2000, 64)) < 0.05, axis=1)
    backend = backends.make_backend(name, params)
    model = {"method": "X", "bits": 64, "checkpoint": "x.pt", "checkpoint_sha256": "0", "config": {}}
    index = write_index(tmp_path, model, "image", backend, [(db, [{} for _ in db])])
    recorded = {**backends.make_backend(name).params(), **params, **({"nlist": 178} if params == {} else {})}
    assert index.manifest["backend"] == {"name": name, "params": recorded}  # ivf's default: 4 sqrt(2000) lists
    assert index.file("faiss").stat().st_size > db.nbytes
    dist, ids = backends.top_k(index.faiss_index(), db[:50], 10)
    assert np.mean(dist == np.sort(hamming(db[:50], db), 1)[:, :10]) > 0.9  # the true neighbours' distances
    assert (np.diff(dist, axis=1) >= 0).all() and (ids[:, 0] >= 0).all()


def test_unknown_backends_and_parameters_are_named():
    with pytest.raises(ValueError, match="unknown search backend 'lsh' \\(choose one of flat, multihash, hnsw, ivf\\)"):
        backends.make_backend("lsh")
    with pytest.raises(ValueError, match="backend hnsw has no parameter nprobe \\(its parameters: m, ef_construction"):
        backends.make_backend("hnsw", {"nprobe": 4})
    with pytest.raises(ValueError, match="IVF.nprobe = 0 must be"):
        backends.make_backend("ivf", {"nprobe": 0})
    with pytest.raises(ValueError, match="ivf nlist=64 needs at least 64 items to train on; the index has 10"):
        backends.build(backends.make_backend("ivf", {"nlist": 64}), np.zeros((10, 2), np.uint8))
    with pytest.raises(ValueError, match="nhash=3 must divide bits=16"):
        backends.build(backends.make_backend("multihash", {"nhash": 3}), np.zeros((4, 2), np.uint8))
