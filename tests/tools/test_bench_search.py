"""tools/bench_search.py at 10,000 items: every method runs and the exact ones agree with the naive ranking."""
import subprocess
import sys

from tests.tools.conftest import ROOT


def test_bench_search_smoke():
    done = subprocess.run([sys.executable, "tools/bench_search.py", "--sizes", "10000", "--queries", "50",
                           "--single", "2", "-k", "10", "--nlist", "32"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| 10,000")]
    methods = {row[2].strip().split(" (")[0]: row[-2].strip() for row in rows}
    assert set(methods) == {"naive", "flat", "multihash r<=2", "multihash r<=4", "multihash r<=8", "hnsw", "ivf"}
    assert methods["naive"] == methods["flat"] == "exact"  # the naive ranking is the flat one, ties by id
    assert all(v.startswith("exact (") for k, v in methods.items() if k.startswith("multihash"))
    assert 0 <= float(methods["hnsw"]) <= 1 and 0 <= float(methods["ivf"]) <= 1
    assert "flat is" in done.stdout and "faster than naive" in done.stdout
