import json
from dataclasses import replace

import pytest
from conftest import make_candidate, make_prompt

from arbitrage import quality
from arbitrage.errors import ConfigError
from arbitrage.quality import dedup as D
from arbitrage.quality import filters as F
from arbitrage.rows import Scored


def pair(text, language="en", task="explain", finish_reason="stop"):
    return make_prompt(language=language, task=task), Scored(make_candidate(text, finish_reason=finish_reason), 0.5)


def test_exact_dedup_ignores_case_whitespace_and_punctuation():
    prompts = [
        make_prompt(prompt_id=str(i), text=t)
        for i, t in enumerate(["Explain tides.", "  explain   TIDES!", "Explain the tides."])
    ]
    assert list(D.ExactDedup().drop(prompts)) == [1]


def test_near_dedup_catches_small_edits_and_keeps_distinct_texts():
    base = "Je suis une chercheuse en volcanologie à La Réunion qui surveille le Piton de la Fournaise et je voudrais comprendre les capteurs sismiques utilisés sur le volcan"
    texts = [
        base,
        base.replace("comprendre", "bien comprendre"),
        "Ich bin ein Imker aus dem Schwarzwald und möchte wissen, wie ich meine Bienen im Winter füttere.",
    ]
    prompts = [make_prompt(prompt_id=str(i), text=t) for i, t in enumerate(texts)]
    dropped = D.NearDedup(threshold=0.8).drop(prompts)
    assert list(dropped) == [1] and "similar to item 0" in dropped[1]
    with pytest.raises(ConfigError):
        D.NearDedup(num_perm=100, bands=32).check()


def test_minhash_estimates_jaccard():
    a = D.shingles(" ".join(f"w{i}" for i in range(100)), 1)
    b = D.shingles(" ".join(f"w{i}" for i in range(50, 150)), 1)  # Jaccard 50/150
    h = D.MinHash(num_perm=512)
    assert abs(float((h.signature(a) == h.signature(b)).mean()) - 1 / 3) < 0.06


def test_decontamination_against_jsonl_parquet_and_datasets_dir(tmp_path, root):
    import datasets

    sample = root / "tests/data/eval_sample.jsonl"
    leaked = make_prompt(
        prompt_id="a",
        text="Please help: Explain to a ten year old why the sky looks blue during the day and turns orange and red at sunset. Thanks!",
    )
    clean = make_prompt(prompt_id="b", text="Explain to a ten year old why bread rises in a warm kitchen.")
    german = make_prompt(
        prompt_id="c",
        text="Erkläre in einfachen Worten, wie eine Wärmepumpe im Winter ein Einfamilienhaus heizt und warum sie Strom braucht.",
    )
    for source in ("jsonl", "parquet", "dir"):
        path = sample
        records = [json.loads(line) for line in sample.read_text().splitlines()]
        ds = datasets.Dataset.from_list([{"text": json.dumps(r, ensure_ascii=False)} for r in records])
        if source == "parquet":
            path = tmp_path / "eval.parquet"
            ds.to_parquet(str(path))
        elif source == "dir":
            path = tmp_path / "evaldir"
            ds.save_to_disk(str(path))
        f = D.Decontaminate([str(path)])
        f.check()
        dropped = f.drop([leaked, clean, german])
        assert sorted(dropped) == [0, 2], source
        assert "13-gram overlap with" in dropped[0]
    with pytest.raises(ConfigError, match="does not exist"):
        D.Decontaminate(["nope.jsonl"]).check()


def test_completion_filters_on_real_multilingual_text():
    assert F.Truncated().drop([pair("ok"), pair("cut", finish_reason="length")]) == {1: "truncated: cut off at max_tokens"}
    assert list(
        F.Length(min_words=3, max_words=6).drop(
            [pair("two words"), pair("three words here"), pair("one two three four five six seven")]
        )
    ) == [0, 2]
    refusals = [
        "As an AI language model, I cannot have opinions.",
        "Lo siento, pero no puedo ayudarte con eso.",
        "En tant qu'IA, je n'ai pas d'avis.",
        "Als KI kann ich das nicht beurteilen.",
        "Como uma IA, não tenho sentimentos.",
        "Mi dispiace, ma non posso rispondere.",
    ]
    fine = ["The tide rises twice a day.", "La marea sube dos veces al día.", "Una breve spiegazione delle maree."]
    dropped = F.Refusal().drop([pair(t) for t in refusals + fine])
    assert sorted(dropped) == list(range(len(refusals)))
    wrong = F.WrongLanguage()
    items = [
        pair("The farmer explained to his neighbours how crop rotation keeps the soil healthy.", language="es"),
        pair("El agricultor explicó a sus vecinos cómo la rotación de cultivos mantiene el suelo sano.", language="es"),
        pair("Short English.", language="de"),
        pair("def f(x):\n    return x * 2  # doubles the value of x for the caller here", language="it", task="code"),
    ]
    assert list(wrong.drop(items)) == [0] and "answer is 'en'" in wrong.drop(items)[0]
    loops = F.Repetition().drop(
        [
            pair(""),
            pair("the cat sat on the mat " * 10),
            pair("A short, varied and perfectly normal answer about tides and moons."),
        ]
    )
    assert loops[0] == "repetition: empty answer" and "repeated" in loops[1] and 2 not in loops


def test_min_reward_and_stage_application_keep_reasons():
    prompt = make_prompt()
    items = [(prompt, Scored(make_candidate("a"), 0.2)), (prompt, Scored(make_candidate("b"), 0.9))]
    counts = {}
    kept, reasons = quality.apply([F.MinReward(0.5)], "chosen", items, counts)
    assert kept == [items[1]] and reasons == {0: "min_reward: reward 0.200 < 0.5"} and counts == {"min_reward": 1}
    # Filters of another stage are not run; later filters see only what earlier ones kept.
    prompts = [make_prompt(prompt_id=str(i), text=t) for i, t in enumerate(["Explain tides.", "explain tides", "Explain tides!"])]
    counts = {}
    kept, reasons = quality.apply(
        [D.ExactDedup(name="exact_prompts"), D.NearDedup(), F.MinReward(0.5)], "prompt", prompts, counts
    )
    assert kept == prompts[:1] and set(reasons) == {1, 2} and counts == {"exact_prompts": 2, "near_dedup": 0}
    assert reasons[1].startswith("exact_prompts: ")


def test_a_misspelt_stage_or_field_is_an_error_not_a_silent_default():
    with pytest.raises(ConfigError, match="filters.exact_answers.stage must be one of prompt, answer, chosen, got 'ouptut'"):
        D.ExactDedup(stage="ouptut", field="response", name="exact_answers")
    with pytest.raises(ConfigError, match="field must be one of prompt, response"):
        D.NearDedup(stage="chosen", field="answer")


def test_diversity_metrics():
    import numpy as np

    from arbitrage.quality import diversity

    assert diversity.distinct_n(["a b c", "d e f"], 1) == 1.0
    assert diversity.distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)
    same = diversity.embedding_spread(["x", "y"], lambda t: np.ones((len(t), 3)))
    orthogonal = diversity.embedding_spread(["x", "y"], lambda t: np.eye(len(t), 3))
    assert same == pytest.approx(0.0) and orthogonal == pytest.approx(1.0)
    m = diversity.metrics(["a b", "c d"], {"language": ["en", "es"], "task": ["x", "x"]})
    assert m["coverage"] == {"language": 2, "task": 1} and "embedding_spread" not in m


def test_wrong_language_on_real_sentences_in_every_project_language():
    wrong = F.WrongLanguage()
    items = [
        pair("Photosynthesis is how plants turn sunlight, water and carbon dioxide into sugar and oxygen.", language="fr"),
        pair("La photosynthèse permet aux plantes de transformer la lumière, l'eau et le CO2 en sucre.", language="fr"),
        pair(
            "Voici le code :\n```python\nprint('hello world, this is plain English text')\n```\nIl affiche un message de bienvenue à l'écran.",
            language="fr",
        ),
    ]
    assert wrong.drop(items) == {0: "wrong_language: answer is 'en', prompt is 'fr'"}
    ten_words = {
        "es": "Te recomiendo empezar con un presupuesto pequeño y anotar gastos.",
        "de": "Ich würde mit kleinem Budget anfangen und jede Ausgabe notieren.",
        "pt": "Eu começaria com um orçamento pequeno e anotaria os gastos.",
        "it": "Io partirei da un budget piccolo e annoterei ogni spesa.",
    }
    for lang, text in ten_words.items():
        assert len(text.split()) == 10
        assert F.detect_answer_language(text) == lang, (lang, text)
    assert not wrong.drop([pair(text, language=lang) for lang, text in ten_words.items()])
    assert F.detect_answer_language("  123 + 456 = 579 ") is None
    assert [F._iso639_1(x) for x in ("__label__en", "PT-br", "zh_Hans", "und", "un")] == ["en", "pt", "zh", None, None]


# Answers the packaged teachers wrote (runs of personas=all and experiment=conversations): the request
# said back. The copy passes the language check and carries the keyword the request asks for.
ECHO_PROMPT = (
    "Sono uno chef di Palermo che gestisce una trattoria e valorizza il pesce locale meno conosciuto. "
    "Potresti scrivere un racconto breve, di poche righe, sul pesce azzurro? L'intera risposta deve essere in "
    'italiano; nessun\'altra lingua è ammessa. Includi le parole chiave "pesce" nella tua risposta.'
)


def test_echo_drops_an_answer_that_says_the_request_back_and_keeps_one_that_quotes_it():
    prompt = make_prompt(language="it", text=ECHO_PROMPT)
    echo = F.Echo()
    copied = "Sono uno chef di Palermo che gestisce una trattoria e valorizza il pesce locale meno conosciuto. Potresti scrivere un racconto breve?"
    story = (
        "All'alba la barca di Totò rientrava con le cassette piene di sgombri e sarde. Al mercato nessuno li voleva, "
        'ma quella sera, nella trattoria, il pesce azzurro fritto finì prima del pane: "valorizza il pesce locale", '
        "diceva la lavagna, e per una volta tutti capirono."
    )
    code = "```python\ndef f():\n    '''Sono uno chef di Palermo che gestisce una trattoria e valorizza il pesce'''\n```\nEcco la funzione."
    items = [(prompt, Scored(make_candidate(t), 0.5)) for t in (copied, story, code, "Il pesce azzurro.")]
    dropped = echo.drop(items)
    assert list(dropped) == [0] and dropped[0].startswith("echo: ") and "5-grams are the prompt's" in dropped[0]
    # a later turn: the answer that repeats the assistant's own earlier answer is no answer either
    earlier = "La gestione dello stress comincia dal sonno: dormire subito dopo il turno, al buio."
    turn2 = replace(
        make_prompt(language="it"),
        messages=(
            {"role": "user", "content": "Come gestire lo stress?"},
            {"role": "assistant", "content": earlier},
            {"role": "user", "content": "E nei giorni liberi?"},
        ),
    )
    assert list(echo.drop([(turn2, Scored(make_candidate(earlier), 0.5))])) == [0]
    # code tasks and prompts with tests are the tests' to judge (a completion repeats its docstring)
    assert not echo.drop([(make_prompt(task="code", text=ECHO_PROMPT), Scored(make_candidate(copied), 0.5))])


def test_a_task_that_asks_for_a_text_gets_a_word_floor():
    length = F.Length(min_words_by_task={"email": 8})
    # answers the packaged teachers wrote to email requests of the demo, and a real (short) one
    answers = ["1\n1", "Sì, per la gestione dello stress.", "Ciao Marco, domani alle nove in ufficio per il contratto. A presto!"]
    dropped = length.drop([pair(text, task="email") for text in answers])
    assert dropped == {0: "length: 2 words < 8 (task email)", 1: "length: 6 words < 8 (task email)"}
    assert not length.drop([pair("42", task="math"), pair("Paris.", task="file")])  # other tasks keep the plain floor
    with pytest.raises(ConfigError, match="min_words_by_task.email"):
        F.Length(min_words_by_task={"email": -1})
    with pytest.raises(ConfigError, match="must map a task"):
        F.Length(min_words_by_task=["email"])
