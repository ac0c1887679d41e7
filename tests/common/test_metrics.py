"""Tests of common/metrics/: the fixtures of specs/evaluation.md section 10, brute-force cross-checks on
random data against plain per-query Python written here, edge cases and bad inputs."""
import itertools
import math

import numpy as np
import pytest
import torch

from common import metrics

# ---------------------------------------------------------------------------------------------------------
# Spec fixture 10.1: 3 queries x 6 database items, K = 4 bits, C = 3 labels
# ---------------------------------------------------------------------------------------------------------

Q_CODES = np.array([[-1, 1, -1, 1], [-1, -1, -1, -1], [-1, 1, 1, 1]])
Q_LABELS = np.array([[0, 1, 0], [0, 1, 1], [1, 0, 0]])
DB_CODES = np.array(
    [[1, -1, 1, -1], [-1, -1, -1, 1], [-1, -1, -1, 1], [-1, 1, -1, -1], [-1, -1, -1, -1], [-1, 1, -1, -1]]
)
DB_LABELS = np.array([[1, 1, 0], [0, 0, 1], [0, 1, 1], [0, 1, 1], [1, 0, 0], [1, 1, 1]])
FIXTURE = (Q_CODES, DB_CODES, Q_LABELS, DB_LABELS)
TOL = 1e-6


def approx(value):
    return pytest.approx(value, abs=TOL)


def test_fixture_hamming_distance():
    expected = [[4, 1, 1, 1, 2, 1], [2, 1, 1, 1, 0, 1], [3, 2, 2, 2, 3, 2]]
    dist = metrics.hamming_distance(Q_CODES, DB_CODES)
    assert isinstance(dist, np.ndarray)
    np.testing.assert_array_equal(dist, expected)
    dist_t = metrics.hamming_distance(torch.tensor(Q_CODES), DB_CODES)
    assert isinstance(dist_t, torch.Tensor)
    np.testing.assert_array_equal(dist_t.numpy(), expected)


@pytest.mark.parametrize("variant", ["standard", "standard_excl", "minRK", "R", "legacy"])
def test_fixture_map_all_every_variant(variant):
    per_query = metrics.mean_average_precision(*FIXTURE, variant=variant, reduce=False)
    np.testing.assert_allclose(per_query, [0.645833, 0.710000, 0.383333], atol=1e-6)
    assert metrics.mean_average_precision(*FIXTURE, variant=variant) == approx(0.579722)


def test_fixture_map_all_reverse_and_tie_aware():
    reverse = metrics.mean_average_precision(*FIXTURE, tie_break="reverse", reduce=False)
    np.testing.assert_allclose(reverse, [0.916667, 0.710000, 0.633333], atol=1e-6)
    assert metrics.mean_average_precision(*FIXTURE, tie_break="reverse") == approx(0.753333)
    tie = metrics.mean_average_precision(*FIXTURE, variant="tie_aware", reduce=False)
    np.testing.assert_allclose(tie, [0.796875, 0.710000, 0.473611], atol=1e-6)
    assert metrics.mean_average_precision(*FIXTURE, variant="tie_aware") == approx(0.660162)


@pytest.mark.parametrize(
    "variant, per_query, mean, reverse_mean",
    [
        ("standard", [0.583333, 0.583333, 0.0], 0.388889, 0.861111),
        ("minRK", [0.388889, 0.388889, 0.0], 0.259259, 0.574074),
        ("R", [0.291667, 0.233333, 0.0], 0.175000, 0.438889),
        ("legacy", [0.638889, 0.638889, 0.383333], 0.553704, 0.757407),
    ],
)
def test_fixture_map_at_3(variant, per_query, mean, reverse_mean):
    values = metrics.mean_average_precision(*FIXTURE, topk=3, variant=variant, reduce=False)
    np.testing.assert_allclose(values, per_query, atol=1e-6)
    assert metrics.mean_average_precision(*FIXTURE, topk=3, variant=variant) == approx(mean)
    assert metrics.mean_average_precision(*FIXTURE, topk=3, variant=variant, tie_break="reverse") == approx(
        reverse_mean
    )


def test_fixture_map_at_3_hashnet_excludes_queries_finding_nothing():
    values = metrics.mean_average_precision(*FIXTURE, topk=3, variant="standard_excl", reduce=False)
    np.testing.assert_allclose(values[:2], [0.583333, 0.583333], atol=1e-6)
    assert np.isnan(values[2])
    assert metrics.mean_average_precision(*FIXTURE, topk=3, variant="standard_excl") == approx(0.583333)


def test_fixture_map_at_3_tie_aware():
    values = metrics.mean_average_precision(*FIXTURE, topk=3, variant="tie_aware", reduce=False)
    np.testing.assert_allclose(values, [0.854167, 0.583333, 0.458333], atol=1e-6)
    assert metrics.mean_average_precision(*FIXTURE, topk=3, variant="tie_aware") == approx(0.631944)


def test_fixture_deephash_topk_minus_one_quirk_is_topk_n_minus_1():
    values = metrics.mean_average_precision(*FIXTURE, topk=5, reduce=False)
    np.testing.assert_allclose(values, [0.638889, 0.679167, 0.325], atol=1e-6)
    assert metrics.mean_average_precision(*FIXTURE, topk=5) == approx(0.547685)


def test_fixture_precision_recall_at_3():
    precision = metrics.precision_at_k(*FIXTURE, [3], reduce=False)[3]
    np.testing.assert_allclose(precision, [2 / 3, 2 / 3, 0], atol=1e-6)
    assert metrics.precision_at_k(*FIXTURE, [3]) == {3: approx(0.444444)}
    recall = metrics.recall_at_k(*FIXTURE, [3], reduce=False)[3]
    np.testing.assert_allclose(recall, [0.5, 0.4, 0], atol=1e-6)
    assert metrics.recall_at_k(*FIXTURE, 3) == {3: approx(0.3)}
    tie = metrics.precision_at_k(*FIXTURE, [3], tie_aware=True, reduce=False)[3]
    np.testing.assert_allclose(tie, [0.75, 0.666667, 0.25], atol=1e-6)
    assert metrics.precision_at_k(*FIXTURE, [3], tie_aware=True) == {3: approx(0.555556)}


def test_fixture_topn_curve():
    curve = metrics.topn_precision_curve(*FIXTURE, grid=range(1, 7))
    np.testing.assert_array_equal(curve["n"], [1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(curve["precision"], [0, 0.333333, 0.444444, 0.583333, 0.6, 0.666667], atol=1e-6)
    np.testing.assert_allclose(curve["recall"], [0, 0.15, 0.3, 0.561111, 0.738889, 1.0], atol=1e-6)


@pytest.mark.parametrize(
    "gain, k, per_query, mean",
    [
        ("exponential", 3, [0.530721, 0.333333, 0], 0.288018),
        ("linear", 3, [0.530721, 0.382680, 0], 0.304467),
        ("exponential", 6, [0.748676, 0.685091, 0.550810], 0.661526),
        ("linear", 6, [0.748676, 0.713116, 0.550810], 0.670867),
    ],
)
def test_fixture_ndcg(gain, k, per_query, mean):
    values = metrics.ndcg_at_k(*FIXTURE, [k], gain=gain, reduce=False)[k]
    np.testing.assert_allclose(values, per_query, atol=1e-6)
    assert metrics.ndcg_at_k(*FIXTURE, [k], gain=gain) == {k: approx(mean)}


def test_fixture_pr_curve_by_radius():
    curve = metrics.pr_curve(*FIXTURE)
    np.testing.assert_array_equal(curve["radius"], [0, 1, 2, 3, 4])
    np.testing.assert_allclose(curve["precision_micro"], [0, 0.777778, 0.6, 0.647059, 0.666667], atol=1e-6)
    np.testing.assert_allclose(curve["recall_micro"], [0, 0.583333, 0.75, 0.916667, 1.0], atol=1e-6)
    np.testing.assert_allclose(curve["precision_macro"], [0, 0.516667, 0.561111, 0.644444, 0.666667], atol=1e-6)
    np.testing.assert_allclose(curve["recall_macro"], [0, 0.516667, 0.694444, 0.916667, 1.0], atol=1e-6)
    # P@H<=2, failing queries counted 0: per query 0.6, 0.833333, 0.25
    assert curve["precision_macro"][2] == approx((0.6 + 0.833333 + 0.25) / 3)


def test_fixture_retrieval_metrics_one_pass():
    out = metrics.retrieval_metrics(*FIXTURE, map_topk=(None, 3), ks=(3, 6))
    assert out["mAP@all"] == approx(0.579722)
    assert out["mAP@all[tie]"] == approx(0.660162)
    assert out["mAP@3"] == approx(0.388889)
    assert out["P@3"] == approx(0.444444) and out["R@3"] == approx(0.3)
    assert out["NDCG@3"] == approx(0.288018) and out["NDCG@6"] == approx(0.661526)
    assert out["num_zero_relevant"] == 0 and out["num_zero_found@3"] == 1


# Spec fixture 10.2: caption retrieval, 3 images x 2 captions each
SIMILARITY = np.array(
    [
        [0.90, 0.20, 0.80, 0.10, 0.30, 0.00],
        [0.70, 0.60, 0.50, 0.40, 0.90, 0.10],
        [0.10, 0.25, 0.30, 0.35, 0.80, 0.50],
    ]
)
IMG2TXT = [[0, 1], [2, 3], [4, 5]]
TXT2IMG = [0, 0, 1, 1, 2, 2]


def test_fixture_caption_recall():
    out = metrics.caption_recall_at_k(SIMILARITY, img2txt=IMG2TXT, txt2img=TXT2IMG, ks=(1, 2, 3, 5))
    for k, value in {1: 66.67, 2: 66.67, 3: 66.67, 5: 100.0}.items():
        assert out[f"i2t_R@{k}"] == pytest.approx(value, abs=0.01)
    for k, value in {1: 50.0, 2: 83.33, 3: 100.0}.items():
        assert out[f"t2i_R@{k}"] == pytest.approx(value, abs=0.01)
        assert out[f"t2i_R@{k}[tie]"] == pytest.approx(value, abs=0.01)  # no ties in this matrix
    standard = [v for name, v in out.items() if name.startswith(("i2t_R@", "t2i_R@")) and not name.endswith("[tie]")]
    assert out["rsum"] == pytest.approx(sum(standard))
    assert out["R@mean"] == pytest.approx(sum(standard) / 8)


# ---------------------------------------------------------------------------------------------------------
# Plain per-query Python reference implementations
# ---------------------------------------------------------------------------------------------------------


def ref_tables(qc, dc, ql, dl):
    """Per query: Hamming distances, relevance and shared-label counts, by plain loops."""
    out = []
    for q, yq in zip(qc.tolist(), ql.tolist()):
        dist = [sum(a != b for a, b in zip(q, x)) for x in dc.tolist()]
        shared = [sum(a * b for a, b in zip(yq, yx)) for yx in dl.tolist()]
        out.append((dist, [int(s > 0) for s in shared], shared))
    return out


def ref_order(dist, tie_break):
    sign = 1 if tie_break == "index" else -1
    return sorted(range(len(dist)), key=lambda i: (dist[i], sign * i))


def ref_ap(ranked, k, variant):
    """AP@k of one query from its relevance list in rank order; None when it has no relevant item."""
    total = sum(ranked)
    if total == 0:
        return None
    hits, s_k = 0, 0.0
    for pos, r in enumerate(ranked[:k], start=1):
        if r:
            hits += 1
            s_k += hits / pos
    if variant in ("standard", "standard_excl"):
        return s_k / hits if hits else 0.0
    if variant == "minRK":
        return s_k / min(total, k)
    if variant == "R":
        return s_k / total
    positions = [pos for pos, r in enumerate(ranked, start=1) if r][: min(total, k)]
    return sum(j / pos for j, pos in enumerate(positions, start=1)) / len(positions)


def ref_tie_orders(dist):
    """Every ranking consistent with the distances (all permutations inside each tie group)."""
    groups = [[i for i in range(len(dist)) if dist[i] == d] for d in sorted(set(dist))]
    for parts in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield [i for part in parts for i in part]


def ref_tie_ap_formula(dist, rel):
    """Tie-aware full AP by the item-by-item formula of spec section 6."""
    total = sum(rel)
    if total == 0:
        return None
    ap, before, rel_before = 0.0, 0, 0
    for d in sorted(set(dist)):
        members = [i for i in range(len(dist)) if dist[i] == d]
        n, r = len(members), sum(rel[i] for i in members)
        for j in range(1, n + 1):
            inside = (j - 1) * (r - 1) / (n - 1) if n > 1 else 0.0
            ap += r / n * (rel_before + 1 + inside) / (before + j)
        before, rel_before = before + n, rel_before + r
    return ap / total


def random_problem(seed, num_query=12, num_db=40, bits=6, classes=5, label_p=0.25):
    """Short codes (many ties) and sparse labels (some queries or items without any label)."""
    rng = np.random.default_rng(seed)
    qc = rng.choice([-1, 1], size=(num_query, bits))
    dc = rng.choice([-1, 1], size=(num_db, bits))
    ql = (rng.random((num_query, classes)) < label_p).astype(np.int64)
    dl = (rng.random((num_db, classes)) < label_p).astype(np.int64)
    ql[0] = 0  # at least one query with no relevant item
    return qc, dc, ql, dl


def expected_with_policy(values, zero_relevant):
    if zero_relevant == "zero":
        return float(np.mean([0.0 if v is None else v for v in values]))
    if zero_relevant == "nan":
        return math.nan if any(v is None for v in values) else float(np.mean(values))
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else 0.0


# ---------------------------------------------------------------------------------------------------------
# Brute-force cross-checks on random data
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("tie_break", ["index", "reverse"])
@pytest.mark.parametrize("variant", ["standard", "minRK", "R", "legacy"])
@pytest.mark.parametrize("topk", [None, 1, 5, 17, 40, 100])
def test_map_matches_brute_force(seed, tie_break, variant, topk):
    problem = random_problem(seed)
    tables = ref_tables(*problem)
    k = 40 if topk is None else min(topk, 40)
    ref = [ref_ap([rel[i] for i in ref_order(dist, tie_break)], k, variant) for dist, rel, _ in tables]
    per_query = metrics.mean_average_precision(*problem, topk=topk, variant=variant, tie_break=tie_break,
                                               reduce=False)
    np.testing.assert_allclose(per_query, [0.0 if v is None else v for v in ref], atol=TOL)
    for policy in metrics.ZERO_RELEVANT_POLICIES:
        value = metrics.mean_average_precision(*problem, topk=topk, variant=variant, tie_break=tie_break,
                                               zero_relevant=policy)
        expected = expected_with_policy(ref, policy)
        assert (math.isnan(value) and math.isnan(expected)) or value == approx(expected)


@pytest.mark.parametrize("topk", [3, 10])
def test_map_standard_excl_matches_brute_force(topk):
    problem = random_problem(3)
    ref = []
    for dist, rel, _ in ref_tables(*problem):
        ranked = [rel[i] for i in ref_order(dist, "index")]
        ref.append(ref_ap(ranked, topk, "standard") if sum(ranked[:topk]) else None)
    value = metrics.mean_average_precision(*problem, topk=topk, variant="standard_excl")
    assert value == approx(np.mean([v for v in ref if v is not None]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tie_aware_map_all_matches_formula(seed):
    problem = random_problem(seed, num_query=10, num_db=60, bits=5)
    ref = [ref_tie_ap_formula(dist, rel) for dist, rel, _ in ref_tables(*problem)]
    per_query = metrics.mean_average_precision(*problem, variant="tie_aware", reduce=False)
    np.testing.assert_allclose(per_query, [0.0 if v is None else v for v in ref], atol=TOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_tie_aware_metrics_match_enumeration_over_tie_orders(seed):
    """Exact expectations over every tie order (tiny database, so all orders can be listed)."""
    problem = random_problem(seed, num_query=6, num_db=7, bits=3, label_p=0.4)
    ks = [1, 2, 3, 5, 7]
    for q, (dist, rel, _) in enumerate(ref_tables(*problem)):
        orders = list(ref_tie_orders(dist))
        for k in ks:
            aps = [ref_ap([rel[i] for i in order], k, "standard") for order in orders]
            hits = [sum(rel[i] for i in order[:k]) for order in orders]
            expected_ap = 0.0 if aps[0] is None else float(np.mean(aps))
            topk = None if k == 7 else k
            got = metrics.mean_average_precision(*problem, topk=topk, variant="tie_aware", reduce=False)[q]
            assert got == approx(expected_ap)
            precision = metrics.precision_at_k(*problem, [k], tie_aware=True, reduce=False)[k][q]
            assert precision == approx(np.mean(hits) / k)
            recall = metrics.recall_at_k(*problem, [k], tie_aware=True, reduce=False)[k][q]
            assert recall == approx(np.mean(hits) / sum(rel) if sum(rel) else 0.0)


@pytest.mark.parametrize("tie_break", ["index", "reverse"])
def test_precision_recall_ndcg_and_topn_match_brute_force(tie_break):
    problem = random_problem(4)
    ks = [1, 3, 10, 40, 55]
    ref_p, ref_r, ref_exp, ref_lin = ({k: [] for k in ks} for _ in range(4))
    for dist, rel, shared in ref_tables(*problem):
        order = ref_order(dist, tie_break)
        for k in ks:
            kk = min(k, len(order))
            hits = sum(rel[i] for i in order[:kk])
            ref_p[k].append(hits / kk)
            ref_r[k].append(hits / sum(rel) if sum(rel) else 0.0)
            for table, gain in ((ref_exp, lambda g: 2.0**g - 1), (ref_lin, float)):
                dcg = sum(gain(shared[i]) / math.log2(pos + 1) for pos, i in enumerate(order[:kk], start=1))
                ideal = sorted(shared, reverse=True)[:kk]
                idcg = sum(gain(g) / math.log2(pos + 1) for pos, g in enumerate(ideal, start=1))
                table[k].append(dcg / idcg if idcg > 0 else 0.0)
    precision = metrics.precision_at_k(*problem, ks, tie_break=tie_break, reduce=False)
    recall = metrics.recall_at_k(*problem, ks, tie_break=tie_break, reduce=False)
    ndcg_exp = metrics.ndcg_at_k(*problem, ks, tie_break=tie_break, reduce=False)
    ndcg_lin = metrics.ndcg_at_k(*problem, ks, gain="linear", tie_break=tie_break, reduce=False)
    for k in ks:
        np.testing.assert_allclose(precision[k], ref_p[k], atol=TOL)
        np.testing.assert_allclose(recall[k], ref_r[k], atol=TOL)
        np.testing.assert_allclose(ndcg_exp[k], ref_exp[k], atol=TOL)
        np.testing.assert_allclose(ndcg_lin[k], ref_lin[k], atol=TOL)
    curve = metrics.topn_precision_curve(*problem, grid=[3, 10, 40, 55], tie_break=tie_break)
    np.testing.assert_array_equal(curve["n"], [3, 10, 40])
    np.testing.assert_allclose(curve["precision"], [np.mean(ref_p[k]) for k in (3, 10, 40)], atol=TOL)
    np.testing.assert_allclose(curve["recall"], [np.mean(ref_r[k]) for k in (3, 10, 40)], atol=TOL)


def test_topn_default_grid_is_exact_multiples_of_200_capped_at_n():
    problem = random_problem(0, num_query=3, num_db=450)
    curve = metrics.topn_precision_curve(*problem)
    np.testing.assert_array_equal(curve["n"], [200, 400, 450])


def test_pr_curve_matches_brute_force():
    problem = random_problem(5)
    tables = ref_tables(*problem)
    bits = problem[0].shape[1]
    within = np.zeros(bits + 1)
    rel_within = np.zeros(bits + 1)
    macro_p = np.zeros(bits + 1)
    macro_r = np.zeros(bits + 1)
    for dist, rel, _ in tables:
        for radius in range(bits + 1):
            n = sum(d <= radius for d in dist)
            r = sum(rv for d, rv in zip(dist, rel) if d <= radius)
            within[radius] += n
            rel_within[radius] += r
            macro_p[radius] += r / n if n else 0.0
            macro_r[radius] += r / sum(rel) if sum(rel) else 0.0
    total_rel = sum(sum(rel) for _, rel, _ in tables)
    curve = metrics.pr_curve(*problem)
    np.testing.assert_allclose(curve["precision_micro"], np.where(within > 0, rel_within / np.maximum(within, 1), 0))
    np.testing.assert_allclose(curve["recall_micro"], rel_within / total_rel)
    np.testing.assert_allclose(curve["precision_macro"], macro_p / len(tables))
    np.testing.assert_allclose(curve["recall_macro"], macro_r / len(tables))


def test_retrieval_metrics_agrees_with_separate_functions():
    problem = random_problem(6, num_db=50)
    out = metrics.retrieval_metrics(*problem, map_topk=(None, 5, 20, 80), ks=(1, 10, 80))
    assert out["mAP@all"] == approx(metrics.mean_average_precision(*problem))
    assert out["mAP@all[tie]"] == approx(metrics.mean_average_precision(*problem, variant="tie_aware"))
    for k in (5, 20, 80):
        assert out[f"mAP@{k}"] == approx(metrics.mean_average_precision(*problem, topk=k))
    precision = metrics.precision_at_k(*problem, [1, 10, 80])
    recall = metrics.recall_at_k(*problem, [1, 10, 80])
    ndcg = metrics.ndcg_at_k(*problem, [1, 10, 80])
    for k in (1, 10, 80):
        assert out[f"P@{k}"] == approx(precision[k])
        assert out[f"R@{k}"] == approx(recall[k])
        assert out[f"NDCG@{k}"] == approx(ndcg[k])
    num_relevant = [sum(rel) for _, rel, _ in ref_tables(*problem)]
    assert out["num_zero_relevant"] == sum(r == 0 for r in num_relevant)


def _caption_reference(scores, img2txt, txt2img, ks, tie_break):
    sign = 1 if tie_break == "index" else -1
    i2t_ranks, t2i_ranks, t2i_tie = [], [], {k: [] for k in ks}
    for i, row in enumerate(scores):
        order = sorted(range(len(row)), key=lambda t: (-row[t], sign * t))
        i2t_ranks.append(min(order.index(t) for t in img2txt[i]))
    for t, image in enumerate(txt2img):
        column = [scores[i][t] for i in range(len(scores))]
        order = sorted(range(len(column)), key=lambda i: (-column[i], sign * i))
        t2i_ranks.append(order.index(image))
        greater = sum(c > column[image] for c in column)
        equal = sum(c == column[image] for c in column)
        for k in ks:
            t2i_tie[k].append(min(max(k - greater, 0), equal) / equal)
    out = {}
    for k in ks:
        out[f"i2t_R@{k}"] = 100 * np.mean([r < k for r in i2t_ranks])
        out[f"t2i_R@{k}"] = 100 * np.mean([r < k for r in t2i_ranks])
        out[f"t2i_R@{k}[tie]"] = 100 * np.mean(t2i_tie[k])
    return out


@pytest.mark.parametrize("tie_break", ["index", "reverse"])
def test_caption_recall_with_codes_matches_brute_force(tie_break):
    rng = np.random.default_rng(7)
    image_codes = rng.choice([-1, 1], size=(9, 4))
    text_codes = rng.choice([-1, 1], size=(20, 4))
    txt2img = [t % 9 for t in range(20)]
    img2txt = [[t for t in range(20) if txt2img[t] == i] for i in range(9)]
    scores = (-metrics.hamming_distance(image_codes, text_codes)).tolist()
    ks = (1, 2, 5)
    ref = _caption_reference(scores, img2txt, txt2img, ks, tie_break)
    out = metrics.caption_recall_at_k(image_codes, text_codes, img2txt=img2txt, txt2img=txt2img, ks=ks,
                                      tie_break=tie_break, chunk_size=4)
    for name, value in ref.items():
        assert out[name] == pytest.approx(value), name
    from_similarity = metrics.caption_recall_at_k(np.array(scores), img2txt=img2txt, txt2img=txt2img, ks=ks,
                                                  tie_break=tie_break)
    assert from_similarity == pytest.approx(out)


# ---------------------------------------------------------------------------------------------------------
# Edge cases (spec 10.3), input kinds, chunking
# ---------------------------------------------------------------------------------------------------------


def test_query_without_relevant_items_policies():
    problem = random_problem(0)  # query 0 (and a few others) have no relevant item
    empty = np.array([sum(rel) == 0 for _, rel, _ in ref_tables(*problem)])
    assert empty[0] and not empty.all()
    zero = metrics.mean_average_precision(*problem, reduce=False)
    assert (zero[empty] == 0.0).all()
    nan = metrics.mean_average_precision(*problem, zero_relevant="nan", reduce=False)
    np.testing.assert_array_equal(np.isnan(nan), empty)
    assert math.isnan(metrics.mean_average_precision(*problem, zero_relevant="nan"))
    excluded = metrics.mean_average_precision(*problem, zero_relevant="exclude", reduce=False)
    np.testing.assert_array_equal(np.isnan(excluded), empty)
    assert metrics.mean_average_precision(*problem, zero_relevant="exclude") == approx(zero[~empty].mean())
    assert metrics.mean_average_precision(*problem) == approx(zero.mean())


def test_no_nan_without_relevant_items_or_with_identical_codes():
    rng = np.random.default_rng(1)
    qc = rng.choice([-1, 1], size=(4, 8))
    dc = np.ones((10, 8), dtype=np.int64)  # all database codes equal: one tie group
    ql = np.zeros((4, 3), dtype=np.int64)
    dl = np.zeros((10, 3), dtype=np.int64)
    for variant in metrics.MAP_VARIANTS:
        for topk in (None, 3):
            assert metrics.mean_average_precision(qc, dc, ql, dl, topk=topk, variant=variant) == 0.0
    for fn in (metrics.precision_at_k, metrics.recall_at_k, metrics.ndcg_at_k):
        assert all(v == 0.0 for v in fn(qc, dc, ql, dl, [1, 5]).values())
    curves = {**metrics.pr_curve(qc, dc, ql, dl), **metrics.topn_precision_curve(qc, dc, ql, dl, grid=[2])}
    assert not any(np.isnan(v).any() for v in curves.values())
    out = metrics.retrieval_metrics(qc, dc, ql, dl, map_topk=(None, 3), ks=(1,))
    assert not any(math.isnan(v) for v in out.values())


def test_identical_database_codes_tie_aware_is_random_permutation_expectation():
    rng = np.random.default_rng(2)
    qc = rng.choice([-1, 1], size=(3, 4))
    dc = np.tile(rng.choice([-1, 1], size=(1, 4)), (6, 1))
    ql = np.array([[1, 0], [0, 1], [1, 1]])
    dl = np.array([[1, 0], [0, 0], [0, 1], [1, 0], [0, 0], [1, 1]])
    for q in range(3):
        rel = [int(np.dot(ql[q], dl[i]) > 0) for i in range(6)]
        expected = np.mean([ref_ap([rel[i] for i in order], 6, "standard")
                            for order in itertools.permutations(range(6))])
        assert metrics.mean_average_precision(qc, dc, ql, dl, variant="tie_aware", reduce=False)[q] == approx(
            expected
        )
        assert metrics.mean_average_precision(qc, dc, ql, dl, reduce=False)[q] == approx(ref_ap(rel, 6, "standard"))


def test_topk_beyond_database_is_clamped_and_k_equal_n_matches_map_all():
    full = metrics.mean_average_precision(*FIXTURE)
    for variant in ("standard", "standard_excl", "minRK", "R", "legacy"):
        assert metrics.mean_average_precision(*FIXTURE, topk=6, variant=variant) == approx(full)
        assert metrics.mean_average_precision(*FIXTURE, topk=1000, variant=variant) == approx(full)
    tie = metrics.mean_average_precision(*FIXTURE, variant="tie_aware")
    assert metrics.mean_average_precision(*FIXTURE, topk=6, variant="tie_aware") == approx(tie)
    assert metrics.precision_at_k(*FIXTURE, [100]) == {100: approx(metrics.precision_at_k(*FIXTURE, 6)[6])}


def test_torch_and_numpy_inputs_and_dtypes_agree():
    problem = random_problem(8)
    expected = metrics.retrieval_metrics(*problem, map_topk=(None, 7), ks=(1, 5))
    variants = [
        tuple(torch.from_numpy(x) for x in problem),
        tuple(torch.from_numpy(x).float() for x in problem),
        (problem[0].astype(np.int8), problem[1].astype(np.float32), problem[2].astype(bool), problem[3]),
        (torch.from_numpy(problem[0]).double(), problem[1], torch.from_numpy(problem[2]).bool(), problem[3]),
    ]
    for inputs in variants:
        assert metrics.retrieval_metrics(*inputs, map_topk=(None, 7), ks=(1, 5)) == pytest.approx(expected)
    assert metrics.mean_average_precision(*variants[0], variant="tie_aware") == approx(
        metrics.mean_average_precision(*problem, variant="tie_aware")
    )


@pytest.mark.parametrize("chunk_size", [1, 5, 7, 1000])
def test_results_do_not_depend_on_chunk_size(chunk_size):
    problem = random_problem(9, num_query=17)
    kwargs = dict(chunk_size=chunk_size)
    for variant in metrics.MAP_VARIANTS:
        assert metrics.mean_average_precision(*problem, topk=9, variant=variant, **kwargs) == approx(
            metrics.mean_average_precision(*problem, topk=9, variant=variant)
        )
    assert metrics.retrieval_metrics(*problem, ks=(3,), **kwargs) == pytest.approx(
        metrics.retrieval_metrics(*problem, ks=(3,))
    )
    for key, value in metrics.pr_curve(*problem, **kwargs).items():
        np.testing.assert_allclose(value, metrics.pr_curve(*problem)[key])
    assert metrics.ndcg_at_k(*problem, [4], **kwargs) == pytest.approx(metrics.ndcg_at_k(*problem, [4]))


def test_wide_codes_use_16_bit_distances_and_ignore_autocast():
    rng = np.random.default_rng(3)
    qc, dc = rng.choice([-1, 1], size=(3, 300)), rng.choice([-1, 1], size=(20, 300))
    ql, dl = rng.integers(0, 2, size=(3, 4)), rng.integers(0, 2, size=(20, 4))
    ref = [ref_ap([rel[i] for i in ref_order(dist, "index")], 20, "standard") for dist, rel, _ in
           ref_tables(qc, dc, ql, dl)]
    np.testing.assert_allclose(metrics.mean_average_precision(qc, dc, ql, dl, reduce=False),
                               [0.0 if v is None else v for v in ref], atol=TOL)
    tie = [ref_tie_ap_formula(dist, rel) for dist, rel, _ in ref_tables(qc, dc, ql, dl)]
    np.testing.assert_allclose(metrics.mean_average_precision(qc, dc, ql, dl, variant="tie_aware", reduce=False),
                               [0.0 if v is None else v for v in tie], atol=TOL)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bfloat16 products would round distances above 256
        np.testing.assert_array_equal(metrics.hamming_distance(torch.from_numpy(qc).float(), dc),
                                      [dist for dist, _, _ in ref_tables(qc, dc, ql, dl)])
        np.testing.assert_allclose(metrics.mean_average_precision(qc, dc, ql, dl, reduce=False),
                                   [0.0 if v is None else v for v in ref], atol=TOL)


def test_accelerator_code_paths_agree_with_cpu_paths(monkeypatch):
    """The float32 products and torch's stable sort (used on CUDA) give the CPU paths' numbers."""
    problem = random_problem(10, num_db=60)
    kwargs = dict(map_topk=(None, 7), ks=(1, 10))
    expected = {tie: metrics.retrieval_metrics(*problem, tie_break=tie, **kwargs) for tie in metrics.TIE_BREAKS}
    expected_dist = metrics.hamming_distance(problem[0], problem[1])
    monkeypatch.setattr(metrics.products, "_product_dtype", lambda device: torch.float32)
    monkeypatch.setattr(metrics.engine, "_sort_on_host", lambda device: False)
    for tie in metrics.TIE_BREAKS:
        assert metrics.retrieval_metrics(*problem, tie_break=tie, **kwargs) == pytest.approx(expected[tie])
    np.testing.assert_array_equal(metrics.hamming_distance(problem[0], problem[1]), expected_dist)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda p: (p[0][:, :3], *p[1:]), "db_codes must have the code length of query_codes"),
        (lambda p: (np.where(p[0] > 0, 1, 0), *p[1:]), "query_codes must hold only -1 and \\+1"),
        (lambda p: (p[0], p[1] * 0.5, *p[2:]), "db_codes must hold only -1 and \\+1"),
        (lambda p: (*p[:2], p[2][:, :2], p[3]), "db_labels must have as many classes as query_labels"),
        (lambda p: (*p[:2], p[2][:2], p[3]), "query_labels must have one row per row of query_codes"),
        (lambda p: (*p[:3], p[3] * 2), "db_labels must hold only 0 and 1"),
        (lambda p: (p[0][0], *p[1:]), "query_codes must be a non-empty 2-D matrix"),
        (lambda p: (p[0], p[1][:0], *p[2:]), "db_codes must be a non-empty 2-D matrix"),
        (lambda p: (p[0].astype(bool), *p[1:]), "query_codes must hold -1 and \\+1"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(change, match):
    with pytest.raises(ValueError, match=match):
        metrics.mean_average_precision(*change(FIXTURE))


def test_bad_options_raise_value_error():
    with pytest.raises(ValueError, match="variant must be one of"):
        metrics.mean_average_precision(*FIXTURE, variant="nK")
    with pytest.raises(ValueError, match="tie_break must be one of"):
        metrics.precision_at_k(*FIXTURE, [1], tie_break="random")
    with pytest.raises(ValueError, match="zero_relevant must be one of"):
        metrics.mean_average_precision(*FIXTURE, zero_relevant="skip")
    with pytest.raises(ValueError, match="topk must be a positive integer"):
        metrics.mean_average_precision(*FIXTURE, topk=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        metrics.mean_average_precision(*FIXTURE, chunk_size=0)
    with pytest.raises(ValueError, match="each entry of ks must be a positive integer"):
        metrics.recall_at_k(*FIXTURE, [5, -1])
    with pytest.raises(ValueError, match="gain must be one of"):
        metrics.ndcg_at_k(*FIXTURE, [1], gain="log")
    with pytest.raises(ValueError, match="txt2img must have one entry per caption"):
        metrics.caption_recall_at_k(SIMILARITY, img2txt=IMG2TXT, txt2img=TXT2IMG[:5])
    with pytest.raises(ValueError, match="img2txt must hold caption indices"):
        metrics.caption_recall_at_k(SIMILARITY, img2txt=[[0, 1], [2, 3], [4, 9]], txt2img=TXT2IMG)
    with pytest.raises(ValueError, match=r"img2txt\[1\] must list at least one caption"):
        metrics.caption_recall_at_k(SIMILARITY, img2txt=[[0, 1], [], [2, 3, 4, 5]], txt2img=TXT2IMG)
