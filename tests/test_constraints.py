import random

import pytest

from arbitrage import constraints as C

LANGS = ["en", "es", "fr", "de", "pt", "it"]


@pytest.mark.parametrize(
    "constraint, good, bad",
    [
        ({"type": "max_words", "n": 5}, "Short and sweet.", "This answer has far more than five words in it."),
        ({"type": "min_words", "n": 6}, "Una respuesta con más de seis palabras aquí.", "Muy corta."),
        ({"type": "bullets", "n": 3}, "Intro\n* one\n* two\n- three", "* one\n* two"),
        ({"type": "include_keyword", "word": "Fruchtfolge"}, "Die fruchtfolge ist wichtig.", "Die Fruchtfolgen sind wichtig."),
        ({"type": "avoid_keyword", "word": "garden"}, "My gardens are lovely.", "The Garden is lovely."),
        ({"type": "lowercase"}, "tout est en minuscules ici.", "Tout n'est pas en minuscules."),
        ({"type": "no_commas"}, "No commas here.", "Yes, commas here."),
        (
            {"type": "end_phrase", "phrase": "Posso ajudar em mais alguma coisa?"},
            "Resposta.\nPosso ajudar em mais alguma coisa?",
            "Posso ajudar em mais alguma coisa? Obrigado.",
        ),
        ({"type": "quotation"}, '"wrapped answer"', 'not "wrapped" answer'),
        ({"type": "quotation"}, "«réponse entre guillemets»", "«réponse"),
        ({"type": "json"}, '```json\n{"a": 1}\n```', "{'a': 1}"),
        ({"type": "paragraphs", "n": 2}, "First paragraph.\n\nSecond paragraph.", "Only one paragraph.\nStill the same one."),
        ({"type": "title"}, "<<Il mio titolo>>\nTesto.", "Il mio titolo\nTesto."),
        ({"type": "code_block"}, "Here:\n```python\ndef f(x):\n    return x + 1\n```", "```python\ndef f(x)\n    return\n```"),
        ({"type": "final_number", "answer": "1,234"}, "12 × 100 = 1200, plus 34:\n**1,234**", "The answer is 1234 or maybe 1235"),
        ({"type": "final_number", "answer": "744"}, "22 × 13 = 286\n286 + 458 = 744", "744 is close to 745"),
    ],
)
def test_checker_accepts_good_and_rejects_bad(constraint, good, bad):
    assert C.check(constraint, good) is True
    assert C.check(constraint, bad) is False


def test_language_check_detects_each_language():
    samples = {
        "en": "The farmer explained to his neighbours how crop rotation keeps the soil healthy over many years.",
        "es": "El agricultor explicó a sus vecinos cómo la rotación de cultivos mantiene el suelo sano durante muchos años.",
        "fr": "L'agriculteur a expliqué à ses voisins comment la rotation des cultures garde le sol en bonne santé.",
        "de": "Der Bauer erklärte seinen Nachbarn, wie die Fruchtfolge den Boden über viele Jahre gesund hält.",
        "pt": "O agricultor explicou aos vizinhos como a rotação de culturas mantém o solo saudável durante muitos anos.",
        "it": "L'agricoltore ha spiegato ai vicini come la rotazione delle colture mantiene il terreno sano per molti anni.",
    }
    for lang, text in samples.items():
        assert C.check({"type": "language", "language": lang}, text), lang
        other = "de" if lang != "de" else "en"
        assert not C.check({"type": "language", "language": other}, text), lang


@pytest.mark.parametrize("language", LANGS)
def test_every_constraint_has_an_instruction_in_every_language(language):
    for name in C.REGISTRY:
        args = {"n": 3, "word": "cultura", "phrase": "fin", "answer": "1", "language": "es"}
        text = C.instruction({"type": name, **args}, language)
        assert text and "{" not in text, (name, language)
    assert C.texts()["end_phrase_text"][language]


def test_sampled_constraints_never_conflict():
    rng = random.Random(0)
    for i in range(500):
        ctx = C.Context(
            language=LANGS[i % 6], topic="la rotazione delle colture", task=["explain", "code", "math", "email"][i % 4]
        )
        chosen = C.sample(rng, ctx, 3)
        names = [c["type"] for c in chosen]
        assert len(names) == len(set(names))
        for c in chosen:
            assert not (C.CONFLICTS[c["type"]] & set(names)), names
            assert c["type"] not in C.TASK_EXCLUDES.get(ctx.task, ())
        assert "language" not in names  # attached by the synthesiser to non-English prompts


def test_keyword_comes_from_the_topic():
    ctx = C.Context(language="de", topic="Fruchtfolge im kleinen Gemüsebeet", task="explain")
    word = C.REGISTRY["include_keyword"].make_args(random.Random(1), ctx)["word"]
    assert word in ctx.topic and len(word) >= 6
