"""Reference embeddings for the parity test: sentence-transformers' all-MiniLM-L6-v2.

Run by `cargo xtask parity-fixture`; reads the fixed texts and writes their embeddings next to
them, so `cargo test` needs no Python.
"""

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sentence_transformers  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)
    model = SentenceTransformer(args.model, device="cpu")
    with torch.no_grad():
        emb = model.encode(texts, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    tokens = [len(model.tokenizer(t, truncation=False)["input_ids"]) for t in texts]
    out = {
        "generator": "xtask/scripts/parity_fixture.py",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "texts": texts,
        "untruncated_tokens": tokens,
        "embeddings": [[float(f"{x:.9g}") for x in row] for row in emb],
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    os.replace(tmp, args.out)
    print(f"wrote {len(texts)} reference embeddings to {args.out}")


if __name__ == "__main__":
    main()
