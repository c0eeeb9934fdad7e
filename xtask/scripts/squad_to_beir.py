"""A SQuAD-format file in BEIR's layout, to try `gear eval beir` on data that is here.

    python3 xtask/scripts/squad_to_beir.py ../shared/data/squad-v1.1-dev-a.json OUT_DIR

Corpus = the passages (`_id` "<article>-<paragraph>", title = the article's), queries = the
questions, qrels/test.tsv = each question's own passage with relevance 1.
"""

import json
import os
import sys


def main() -> None:
    src, out = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        data = json.load(f)["data"]
    os.makedirs(os.path.join(out, "qrels"), exist_ok=True)
    with open(os.path.join(out, "corpus.jsonl"), "w", encoding="utf-8") as corpus, open(
        os.path.join(out, "queries.jsonl"), "w", encoding="utf-8"
    ) as queries, open(os.path.join(out, "qrels", "test.tsv"), "w", encoding="utf-8") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for a, article in enumerate(data):
            for p, para in enumerate(article["paragraphs"]):
                doc = f"{a}-{p}"
                title = article.get("title", "").replace("_", " ")
                corpus.write(json.dumps({"_id": doc, "title": title, "text": para["context"]}) + "\n")
                for qa in para["qas"]:
                    if qa.get("is_impossible") or not qa.get("answers"):
                        continue
                    queries.write(json.dumps({"_id": qa["id"], "text": qa["question"]}) + "\n")
                    qrels.write(f"{qa['id']}\t{doc}\t1\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
