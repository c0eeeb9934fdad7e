"""Reference embeddings for the parity tests: sentence-transformers' all-MiniLM-L6-v2, and the
same weights under every other pooling mode (folders made here exactly as the Rust test makes
them: MiniLM's files, a rewritten `1_Pooling/config.json`, `Normalize` kept or dropped).

Run by `cargo xtask parity-fixture`; reads the fixed texts and writes their embeddings next to
them, so `cargo test` needs no Python.
"""

import argparse
import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sentence_transformers  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pooling-out", required=True)
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
    write(args.out, out)
    print(f"wrote {len(texts)} reference embeddings to {args.out}")

    variants = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, mode, normalize in VARIANTS:
            folder = variant_folder(args.model, os.path.join(tmp, name), mode, normalize)
            m = SentenceTransformer(folder, device="cpu")
            with torch.no_grad():
                e = m.encode(texts, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
            variants.append(
                {
                    "name": name,
                    "mode": mode,
                    "normalize": normalize,
                    "embeddings": [[float(f"{x:.9g}") for x in row] for row in e],
                }
            )
    write(
        args.pooling_out,
        {
            "generator": "xtask/scripts/parity_fixture.py",
            "sentence_transformers": sentence_transformers.__version__,
            "texts": texts,
            "variants": variants,
        },
    )
    print(f"wrote {len(variants)} pooling variants to {args.pooling_out}")


# (folder name, pooling_mode_* key set true, Normalize kept)
VARIANTS = [
    ("cls", "pooling_mode_cls_token", True),
    ("max", "pooling_mode_max_tokens", False),
    ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens", False),
    ("lasttoken", "pooling_mode_lasttoken", True),
    ("mean_unnormalized", "pooling_mode_mean_tokens", False),
]


def variant_folder(src: str, dst: str, mode: str, normalize: bool) -> str:
    """MiniLM's files, with one pooling mode on and Normalize kept or dropped."""
    os.makedirs(os.path.join(dst, "1_Pooling"))
    for name in os.listdir(src):
        if os.path.isfile(os.path.join(src, name)) and name != "modules.json":
            os.symlink(os.path.join(src, name), os.path.join(dst, name))
    with open(os.path.join(src, "1_Pooling", "config.json"), encoding="utf-8") as f:
        pooling = json.load(f)
    for key in list(pooling):
        if key.startswith("pooling_mode_"):
            pooling[key] = False
    pooling[mode] = True
    with open(os.path.join(dst, "1_Pooling", "config.json"), "w", encoding="utf-8") as f:
        json.dump(pooling, f)
    with open(os.path.join(src, "modules.json"), encoding="utf-8") as f:
        modules = json.load(f)
    if not normalize:
        modules = [m for m in modules if not m["type"].endswith("Normalize")]
    with open(os.path.join(dst, "modules.json"), "w", encoding="utf-8") as f:
        json.dump(modules, f)
    return dst


def write(path: str, value: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
