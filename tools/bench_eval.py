"""Benchmark mAP@all of common.metrics against a naive evaluation written the way the reference code does it.

The naive baseline builds the dense query x database distance and relevance matrices, then loops over the
queries in Python with a full ``torch.sort`` of each row (stable, so that its tie order is ours). Its
tie-aware counterpart applies the formula of spec section 6 item by item after the same sort. Ours is
``mean_average_precision`` with variants ``standard`` and ``tie_aware``.

Each measurement runs in a fresh subprocess that loads the data, resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``) and reports wall time and the rise of peak RSS over the RSS before the call, so
torch's import and the input arrays are not counted but everything the evaluation allocates is.

Usage: ``python tools/bench_eval.py [--quick] [--threads N]``. Other work on the machine distorts wall times
(the load average is printed before and after); CPU times are steadier, so ratios show both.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BITS = 64
# name, queries, database, classes, mean labels per item, whether to run the naive baseline
SIZES = [
    ("MIRFlickr", 2000, 18015, 24, 3.8, True),
    ("NUS-WIDE", 2100, 193734, 21, 1.9, True),
    ("MS-COCO", 5000, 117218, 80, 2.9, True),
    ("1M database", 5000, 1000000, 80, 2.9, False),
]
QUICK_SIZES = [
    ("MIRFlickr/10", 200, 1801, 24, 3.8, True),
    ("NUS-WIDE/10", 210, 19373, 21, 1.9, True),
    ("MS-COCO/10", 500, 11721, 80, 2.9, True),
    ("100K database", 500, 100000, 80, 2.9, False),
]


def make_data(num_query: int, num_db: int, classes: int, mean_labels: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Multi-hot labels with Zipf-like class frequencies and codes built from per-class prototype codes.

    Each item's code is the sign of the sum of its classes' prototypes plus Gaussian noise, so items that
    share labels have close codes and mAP is well above chance, but not perfect.
    """
    rng = np.random.default_rng(seed)
    log_freq = -0.8 * np.log(np.arange(1, classes + 1))
    prototypes = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(classes, BITS))

    def split(rows: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.zeros((rows, classes), dtype=np.uint8)
        codes = np.empty((rows, BITS), dtype=np.int8)
        for start in range(0, rows, 100_000):
            part = slice(start, min(rows, start + 100_000))
            n = part.stop - part.start
            count = np.clip(1 + rng.poisson(mean_labels - 1, size=n), 1, classes)
            # Gumbel top-k: the first count[i] classes by perturbed log-frequency are a weighted draw.
            keys = log_freq + rng.gumbel(size=(n, classes))
            ranks = np.argsort(np.argsort(-keys, axis=1), axis=1)
            labels[part] = ranks < count[:, None]
            mixed = labels[part].astype(np.float32) @ prototypes
            mixed += rng.normal(scale=1.2, size=mixed.shape).astype(np.float32) * np.sqrt(count)[:, None]
            codes[part] = np.where(mixed >= 0, 1, -1)
        return codes, labels

    query_codes, query_labels = split(num_query)
    db_codes, db_labels = split(num_db)
    return {"query_codes": query_codes, "db_codes": db_codes, "query_labels": query_labels, "db_labels": db_labels}


def naive_map(query_codes, db_codes, query_labels, db_labels, tie_aware: bool) -> float:
    """Dense matrices, a stable full sort per row and a Python loop over queries (the reference style)."""
    import torch

    qc, dc = torch.from_numpy(query_codes).float(), torch.from_numpy(db_codes).float()
    ql, dl = torch.from_numpy(query_labels).float(), torch.from_numpy(db_labels).float()
    bits = qc.shape[1]
    dist = 0.5 * (bits - qc @ dc.T)
    relevance = (ql @ dl.T > 0).float()
    total = 0.0
    for i in range(qc.shape[0]):
        sorted_dist, order = torch.sort(dist[i], stable=True)
        rel = relevance[i][order]
        num_relevant = rel.sum()
        if num_relevant == 0:
            continue
        if not tie_aware:
            positions = torch.nonzero(rel).squeeze(1).double() + 1
            total += float((torch.arange(1, int(num_relevant) + 1, dtype=torch.float64) / positions).mean())
            continue
        _, sizes = torch.unique_consecutive(sorted_dist, return_counts=True)
        group = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
        group_rel = torch.zeros(len(sizes), dtype=torch.float64).index_add_(0, group, rel.double())
        size = sizes.double()
        before = torch.cumsum(size, 0) - size
        rel_before = torch.cumsum(group_rel, 0) - group_rel
        slot = torch.arange(1, len(rel) + 1, dtype=torch.float64) - before[group]
        n, r = size[group], group_rel[group]
        inside = torch.where(n > 1, (slot - 1) * (r - 1) / (n - 1).clamp(min=1), torch.zeros_like(n))
        expected = (rel_before[group] + 1 + inside) / (before[group] + slot)
        total += float((expected * r / n).sum() / num_relevant)
    return total / qc.shape[0]


def ours_map(query_codes, db_codes, query_labels, db_labels, tie_aware: bool) -> float:
    from common.metrics import mean_average_precision

    variant = "tie_aware" if tie_aware else "standard"
    return mean_average_precision(query_codes, db_codes, query_labels, db_labels, variant=variant)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(data_dir: str, method: str, tie_aware: bool, threads: int | None) -> None:
    """Run one measurement in this (fresh) process and print it as JSON."""
    import torch

    import common.metrics  # noqa: F401  (imported before the baseline so import memory and time do not count)

    if threads:
        torch.set_num_threads(threads)

    data = {name: np.load(Path(data_dir) / f"{name}.npy") for name in
            ("query_codes", "db_codes", "query_labels", "db_labels")}
    method_fn = naive_map if method == "naive" else ours_map
    # Warm-up on a small slice, so one-time initialisation (thread pools, BLAS) is not timed for either method.
    method_fn(data["query_codes"][:4], data["db_codes"][:1000], data["query_labels"][:4], data["db_labels"][:1000],
              tie_aware=tie_aware)
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS mark := current RSS
    before = _rss_kib("VmRSS")
    cpu_start, start = _cpu_seconds(), time.perf_counter()
    value = method_fn(**data, tie_aware=tie_aware)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    peak = _rss_kib("VmHWM")
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_mib": (peak - before) / 1024, "value": value}))


def measure(data_dir: str, method: str, tie_aware: bool, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", data_dir, method, "tie" if tie_aware else "std"]
    if threads:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measurement {method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratio(baseline: dict, ours: dict) -> str:
    """Speed-up by wall time, with the CPU-time ratio in parentheses (steadier when the machine is shared)."""
    return f"{baseline['seconds'] / ours['seconds']:.1f}x ({baseline['cpu'] / ours['cpu']:.1f}x)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes divided by ten (and a 100K database)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], args.worker[2] == "tie", args.threads)
        return 0
    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {BITS}-bit codes, mAP@all; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    header = (f"{'size':<12}{'M x N':>18}  {'method':<16}{'wall s':>8}{'cpu s':>8}{'peak MiB':>9}"
              f"{'vs naive':>15}{'vs naive std':>15}{'mAP@all':>10}  agree")
    print(header)
    print("-" * len(header))
    all_agree = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, num_query, num_db, classes, mean_labels, with_naive in (QUICK_SIZES if args.quick else SIZES):
            for key, array in make_data(num_query, num_db, classes, mean_labels).items():
                np.save(Path(tmp) / f"{key}.npy", array)
            shape = f"{num_query:,} x {num_db:,}"
            naive_std = None
            for tie_aware in (False, True):
                label = "tie_aware" if tie_aware else "standard"
                rows = []
                naive = measure(tmp, "naive", tie_aware, args.threads) if with_naive else None
                if naive is not None:
                    naive_std = naive_std or naive
                    rows.append(("naive " + label, naive, "", "", ""))
                ours = measure(tmp, "ours", tie_aware, args.threads)
                if naive is not None:
                    agree = abs(naive["value"] - ours["value"]) < 1e-6
                    all_agree &= agree
                    rows.append(("ours " + label, ours, _ratio(naive, ours), _ratio(naive_std, ours),
                                 "yes" if agree else "NO"))
                else:
                    rows.append(("ours " + label, ours, "-", "-", "-"))
                for method, result, speed, speed_std, verdict in rows:
                    print(f"{name:<12}{shape:>18}  {method:<16}{result['seconds']:>8.2f}{result['cpu']:>8.2f}"
                          f"{result['peak_mib']:>9.0f}{speed:>15}{speed_std:>15}{result['value']:>10.6f}  {verdict}",
                          flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("values agree (|naive - ours| < 1e-6):", "yes" if all_agree else "NO")
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
