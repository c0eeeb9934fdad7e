"""sentence-transformers side of `cargo xtask bench-encode`: times `encode` on one text per line.

Prints one JSON line: {"texts": N, "seconds": [run1, run2, ...]} (model loading excluded).
"""

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--max-len", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    with open(args.input, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_len
    seconds = []
    for _ in range(args.runs):
        start = time.perf_counter()
        model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"texts": len(texts), "seconds": seconds}))


if __name__ == "__main__":
    main()
