"""FAISS on the vectors `cargo xtask bench-index` generated: IndexFlatIP (exact inner product)
at batch 1 and 64, and IndexHNSWFlat (M = 32, efConstruction = 200, inner product) at the given
efSearch values (all 1,000 queries in one call, and one at a time) with recall@10 against the
flat results. Prints one JSON object.

usage: bench_faiss.py DIR N DIM SINGLE HNSW(0|1) EF[,EF...]
"""

import json
import os
import resource
import sys
import time

import faiss
import numpy as np


def main() -> None:
    folder, n, dim, single, hnsw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
    efs = [int(e) for e in sys.argv[6].split(",")]
    k = 10
    start = time.perf_counter()
    xb = np.fromfile(os.path.join(folder, "vectors.f32"), dtype="<f4").reshape(n, dim)
    xq = np.fromfile(os.path.join(folder, "queries.f32"), dtype="<f4").reshape(-1, dim)
    flat = faiss.IndexFlatIP(dim)
    flat.add(xb)
    load_s = time.perf_counter() - start
    out = {"flat_load_s": load_s, "threads": faiss.omp_get_max_threads()}
    _, exact = flat.search(xq, k)  # warm-up and the reference
    start = time.perf_counter()
    for i in range(single):
        flat.search(xq[i % len(xq) : i % len(xq) + 1], k)
    out["flat_qps_1"] = single / (time.perf_counter() - start)
    batches = len(xq) // 64
    start = time.perf_counter()
    for b in range(batches):
        flat.search(xq[b * 64 : (b + 1) * 64], k)
    out["flat_qps_64"] = batches * 64 / (time.perf_counter() - start)
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if hnsw:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        start = time.perf_counter()
        index.add(xb)
        build_s = time.perf_counter() - start
        runs = []
        for ef in efs:
            index.hnsw.efSearch = ef
            start = time.perf_counter()
            _, found = index.search(xq, k)
            qps = len(xq) / (time.perf_counter() - start)
            start = time.perf_counter()
            for i in range(single):
                index.search(xq[i % len(xq) : i % len(xq) + 1], k)
            qps_1 = single / (time.perf_counter() - start)
            recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(exact, found)]))
            runs.append({"ef": ef, "build_s": build_s, "qps": qps, "qps_1": qps_1, "recall": recall})
        out["hnsw"] = runs
    print(json.dumps(out))


if __name__ == "__main__":
    main()
