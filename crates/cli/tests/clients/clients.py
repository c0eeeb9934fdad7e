"""The clients our users already call embedding servers with, against a running `gear serve`:
OpenAI's Python package on /v1/embeddings and huggingface_hub's InferenceClient on /embed
(TEI's route). Prints one JSON object for the Rust test to compare with the server's own
answers. Usage: clients.py URL TEXT...
"""

import json
import sys

from huggingface_hub import InferenceClient
from openai import BadRequestError, OpenAI


def main() -> None:
    url, texts = sys.argv[1], sys.argv[2:]
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    # The package asks for base64 unless told otherwise, and decodes it.
    default = client.embeddings.create(model="gear", input=texts)
    floats = client.embeddings.create(model="gear", input=texts, encoding_format="float")
    single = client.embeddings.create(model="gear", input=texts[0])
    try:
        client.embeddings.create(model="gear", input=texts, dimensions=7)
        refused = None
    except BadRequestError as e:
        refused = {"status": e.status_code, "message": str(e)}
    hf = InferenceClient(model=url + "/embed").feature_extraction(texts[0])
    print(
        json.dumps(
            {
                "default": [d.embedding for d in default.data],
                "default_index": [d.index for d in default.data],
                "float": [d.embedding for d in floats.data],
                "single": single.data[0].embedding,
                "model": default.model,
                "prompt_tokens": default.usage.prompt_tokens,
                "total_tokens": default.usage.total_tokens,
                "refused": refused,
                "hf": [float(x) for x in hf.reshape(-1)],
            }
        )
    )


if __name__ == "__main__":
    main()
