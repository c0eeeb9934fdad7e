"""Independent computation of the pretrained bi-encoder baseline on SQuAD, for the cross-check
of `gear eval squad --pretrained` (method §5 protocol):

- global: every question against all passages of the file, cosine of sentence-transformers
  all-MiniLM-L6-v2 embeddings, Recall@5 and MAP@5 (one relevant passage);
- local: the gold passage's sentences — the spans `gear eval squad --export-sentences` wrote —
  ranked by cosine to the question, Recall@1 and MAP@1 over the sentences holding gold answers.

Usage: python squad_baseline.py --model DIR --squad FILE --sentences spans.jsonl --out result.json
"""

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402


def ap_at_k(ranked, relevant, k):
    relevant = set(relevant)
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, r in enumerate(ranked[:k]):
        if r in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / min(len(relevant), k)


def recall_at_k(ranked, relevant, k):
    relevant = set(relevant)
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--squad", required=True)
    ap.add_argument("--sentences", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    data = json.load(open(args.squad, encoding="utf-8"))
    passages = [p["context"] for a in data["data"] for p in a["paragraphs"]]
    targets = [json.loads(line) for line in open(args.sentences, encoding="utf-8")]
    model = SentenceTransformer(args.model, device="cpu")

    p = model.encode(passages, batch_size=32, convert_to_numpy=True)
    q = model.encode([t["question"] for t in targets], batch_size=32, convert_to_numpy=True)
    top = np.argsort(-(q @ p.T), axis=1, kind="stable")[:, :5]
    g_recall = np.mean([recall_at_k(list(top[i]), [t["passage"]], 5) for i, t in enumerate(targets)])
    g_map = np.mean([ap_at_k(list(top[i]), [t["passage"]], 5) for i, t in enumerate(targets)])

    cache = {}
    l_recall, l_map = [], []
    for i, t in enumerate(targets):
        if t["passage"] not in cache:
            text = passages[t["passage"]]
            cache[t["passage"]] = model.encode([text[s:e] for s, e in t["sentences"]], batch_size=64, convert_to_numpy=True)
        scores = cache[t["passage"]] @ q[i]
        ranked = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
        l_recall.append(recall_at_k(ranked, t["relevant"], 1))
        l_map.append(ap_at_k(ranked, t["relevant"], 1))

    result = {
        "global.recall@5": float(g_recall),
        "global.map@5": float(g_map),
        "local.recall@1": float(np.mean(l_recall)),
        "local.map@1": float(np.mean(l_map)),
        "questions": len(targets),
        "passages": len(passages),
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
