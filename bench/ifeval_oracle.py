"""arbitrage.ifeval against IFEval's reference code, on a seeded fuzz corpus (issue 22 item 7).

Three steps; the corpus and the reference's verdicts are committed, so only `verdicts` needs the
reference installed:

    python bench/ifeval_oracle.py generate   # bench/data/ifeval_fuzz.jsonl.gz: (instruction, kwargs, response)
    python bench/ifeval_oracle.py verdicts --lm-eval /tmp/ref/lm_eval-0.4.13-py3-none-any.whl
    python bench/ifeval_oracle.py check      # ours against the stored verdicts (also tests/test_ifeval_oracle.py)

The reference is Google's IFEval code as lm-evaluation-harness ships it
(``lm_eval/tasks/ifeval/instructions*.py`` and the strict/loose loops of ``utils.py``). Installing
lm-eval pulls torch and more, so `verdicts` loads those four files straight from the wheel and
needs only their own imports, the ``ifeval-oracle`` extra::

    .venv/bin/pip install -e '.[ifeval-oracle]'          # nltk 3.10.4, langdetect, immutabledict
    .venv/bin/pip download --no-deps -d /tmp/ref lm-eval==0.4.13

NLTK's ``punkt_tab`` data is not on PyPI (``nltk.download`` fetches it from GitHub). When
``nltk.data.find("tokenizers/punkt_tab/english/")`` finds it, the reference uses it; otherwise
(``--punkt ours``, the default here, where only PyPI is reachable) this script writes a
``punkt_tab/english`` directory from ``arbitrage/ifeval/punkt_english.tsv`` (the model converted
from punkt_tab value for value) into a temporary NLTK_DATA, so NLTK's own Punkt and Treebank
code runs on the same parameters. That checks our algorithm and every other rule against the
reference, not the conversion of the table itself; with the real data, run with ``--punkt nltk``.
langdetect is seeded with 0, as arbitrage.ifeval seeds it.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import random
import sys
import tempfile
import types
import zipfile
from collections import Counter
from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "ifeval_fuzz.jsonl.gz"
SEED = 20261207

# --- generate --------------------------------------------------------------------------------

_WORDS = (
    "the sea river light stone garden winter market paper window music letter bridge forest city "
    "morning quiet simple careful bright ancient small open road friend story answer idea"
).split()
_SENTENCES = [
    "The sea was calm this morning.",
    "Dr. Smith arrived at 5 p.m. and left early.",
    "Is it really that simple?",
    "Wow! That was fast.",
    "She said “yes.” Then she left.",
    "Prices rose 3.5% in the U.S. last year.",
    "Use e.g. a pen, or a pencil.",
    "IT'S OK. We are done...",
    "Mr. and Mrs. Brown live on Elm St. near the park.",
    "He waited... and waited.",
    "The end (finally).",
    "It works, i.e. it runs.",
]
_FOREIGN = {
    "en": "The weather is lovely today and we are going for a long walk along the river.",
    "de": "Das Wetter ist heute schön und wir gehen einen langen Spaziergang am Fluss entlang.",
    "fr": "Il fait beau aujourd'hui et nous allons faire une longue promenade le long de la rivière.",
    "es": "Hoy hace buen tiempo y vamos a dar un largo paseo por la orilla del río.",
    "it": "Oggi il tempo è bello e andiamo a fare una lunga passeggiata lungo il fiume.",
    "pt": "O tempo está bom hoje e vamos dar um longo passeio ao longo do rio.",
    "ru": "Сегодня прекрасная погода, и мы идём на долгую прогулку вдоль реки.",
    "hi": "आज मौसम बहुत अच्छा है और हम नदी के किनारे लंबी सैर के लिए जा रहे हैं।",
    "ja": "今日は天気がとても良いので、川沿いを長く散歩します。",
    "zh": "今天天气很好，我们要沿着河边散步很久。",
    "ko": "오늘은 날씨가 좋아서 강을 따라 오래 산책할 거예요.",
    "ar": "الطقس جميل اليوم وسنذهب في نزهة طويلة على طول النهر.",
    "th": "วันนี้อากาศดีมากและเราจะไปเดินเล่นริมแม่น้ำกันนาน",
    "sw": "Hali ya hewa ni nzuri leo na tutatembea kwa muda mrefu kando ya mto.",
}


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _sentences(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_SENTENCES) for _ in range(n))


def _decorate(rng: random.Random, text: str) -> str:
    """`text` with a chance of the wrappers the loose verdict strips: a first/last line, asterisks."""
    roll = rng.random()
    if roll < 0.15:
        text = "Sure, here it is:\n" + text
    elif roll < 0.25:
        text = text + "\nHope this helps!"
    elif roll < 0.32:
        text = "**Answer**\n" + text + "\n*end*"
    if rng.random() < 0.1:
        text = "  " + text + "  \n"
    return text


def _relation(rng: random.Random) -> str:
    return rng.choice(["less than", "at least"])


def _cases(rng: random.Random) -> list[tuple[str, dict, str]]:  # noqa: C901 - one branch per instruction id
    """One (instruction id, kwargs, response) per call for every id; called many times."""
    out: list[tuple[str, dict, str]] = []
    body = _words(rng, rng.randint(3, 30))

    keywords = rng.sample(_WORDS, rng.randint(1, 3))
    text = (
        _sentences(rng, 2)
        + " "
        + " ".join(rng.choice([k, k.upper(), k + "s", k.title(), "x" + k, k[:-1], k[0] + "-" + k[1:]]) for k in keywords)
    )
    out.append(("keywords:existence", {"keywords": keywords}, text))

    keyword = rng.choice(_WORDS)
    frequency = rng.randint(1, 4)
    count = max(0, frequency + rng.choice([-1, 0, 0, 1]))
    pieces = [_words(rng, rng.randint(0, 4)) for _ in range(count + 1)]
    forms = [rng.choice([keyword, keyword.upper(), keyword + ",", keyword + "s", f"'{keyword}'"]) for _ in range(count)]
    text = " ".join(p + (" " + f if i < count else "") for i, (p, f) in enumerate(zip(pieces, [*forms, ""], strict=True)))
    out.append(("keywords:frequency", {"keyword": keyword, "frequency": frequency, "relation": _relation(rng)}, text))

    forbidden = rng.sample(_WORDS, 2)
    text = body + " " + rng.choice(["", forbidden[0], forbidden[0].title() + ".", "un" + forbidden[1], forbidden[1] + "-like"])
    out.append(("keywords:forbidden_words", {"forbidden_words": forbidden}, text))

    letter = rng.choice("aeirstz")
    let_frequency = rng.randint(1, 12)
    text = body + " " + (letter * max(0, let_frequency + rng.choice([-1, 0, 1]) - body.count(letter)))
    if rng.random() < 0.3:
        text = text.upper()
    out.append(
        ("keywords:letter_frequency", {"letter": letter, "let_frequency": let_frequency, "let_relation": _relation(rng)}, text)
    )

    language = rng.choice(sorted(set(_FOREIGN) - {"zh"}))  # the reference has no code for Chinese
    spoken = rng.choice([language, language, rng.choice(sorted(_FOREIGN))])
    text = _FOREIGN[spoken] + rng.choice(["", " " + _FOREIGN[spoken], " OK", "\n" + _FOREIGN["en"], " 123"])
    if rng.random() < 0.08:
        text = rng.choice(["123 456", "!!!", "ok", "*** ---"])
    out.append(("language:response_language", {"language": language}, text))

    num_sentences = rng.randint(1, 6)
    text = _sentences(rng, max(1, num_sentences + rng.choice([-1, 0, 0, 1])))
    if rng.random() < 0.3:
        text = text.replace(". ", ".\n", 1)
    out.append(("length_constraints:number_sentences", {"num_sentences": num_sentences, "relation": _relation(rng)}, text))

    num_paragraphs = rng.randint(1, 4)
    paragraphs = [_sentences(rng, 1) for _ in range(max(1, num_paragraphs + rng.choice([-1, 0, 0, 1])))]
    separator = rng.choice(["\n\n***\n\n", "\n***\n", "***", "\n\n* * *\n\n", " *** "])
    text = separator.join(paragraphs)
    if rng.random() < 0.15:
        text = text + separator
    out.append(("length_constraints:number_paragraphs", {"num_paragraphs": num_paragraphs}, text))

    num_words = rng.randint(3, 40)
    n = max(1, num_words + rng.choice([-1, 0, 1, 5]))
    text = _words(rng, n)
    if rng.random() < 0.3:
        text = text.replace(" ", rng.choice(["-", "'", ", ", " — ", "_"]), 2)
    out.append(("length_constraints:number_words", {"num_words": num_words, "relation": _relation(rng)}, text))

    num_paragraphs = rng.randint(1, 4)
    nth = rng.randint(1, num_paragraphs)
    first_word = rng.choice(_WORDS)
    paragraphs = [_sentences(rng, 1) for _ in range(max(1, num_paragraphs + rng.choice([-1, 0, 0])))]
    if nth <= len(paragraphs):
        start = rng.choice(
            [first_word, first_word.title(), f'"{first_word.title()}', first_word + ",", "**" + first_word + "**", "x"]
        )
        paragraphs[nth - 1] = start + " " + paragraphs[nth - 1]
    text = rng.choice(["\n\n", "\n\n\n", "\n \n"]).join(paragraphs)
    out.append(
        (
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": num_paragraphs, "nth_paragraph": nth, "first_word": first_word},
            text,
        )
    )

    num_placeholders = rng.randint(1, 4)
    holders = ["[name]", "[address line]", "[]", "[ x ]", "[[nested]]", "[a\nb]", "[1]"]
    text = body + " " + " ".join(rng.choice(holders) for _ in range(max(0, num_placeholders + rng.choice([-1, 0, 1]))))
    out.append(("detectable_content:number_placeholders", {"num_placeholders": num_placeholders}, text))

    marker = rng.choice(["P.S.", "P.P.S", "p.s.", "PS:"])
    text = body + "\n\n" + rng.choice(["P.S. see you", "p.s. later", "P.P.S. more", "PS: hi", "P. S. odd", "PS. x", ""])
    out.append(("detectable_content:postscript", {"postscript_marker": marker}, text))

    num_bullets = rng.randint(1, 5)
    bullets = [
        rng.choice(["* ", "- ", "*", "  * ", "** ", "1. ", "-- "]) + _words(rng, 3)
        for _ in range(max(0, num_bullets + rng.choice([-1, 0, 0, 1])))
    ]
    text = _sentences(rng, 1) + "\n" + "\n".join(bullets)
    out.append(("detectable_format:number_bullet_lists", {"num_bullets": num_bullets}, text))

    text = rng.choice(
        [
            "My answer is yes.",
            "My answer is no.",
            "My answer is maybe.",
            "my answer is yes.",
            "My answer is yes",
            "I think: My answer is no.  ",
            "My answer is Yes.",
        ]
    )
    out.append(("detectable_format:constrained_response", {}, text))

    num_highlights = rng.randint(1, 4)
    marks = ["*a*", "**bold**", "* *", "*two words*", "**", "*x y z*", "*\n*"]
    text = body + " " + " ".join(rng.choice(marks) for _ in range(max(0, num_highlights + rng.choice([-1, 0, 1]))))
    out.append(("detectable_format:number_highlighted_sections", {"num_highlights": num_highlights}, text))

    spliter = rng.choice(["Section", "SECTION", "Part", "PARAGRAPH"])
    num_sections = rng.randint(1, 4)
    heads = [
        rng.choice(
            [f"{spliter} {i + 1}", f"{spliter.lower()} {i + 1}", f"{spliter} X", f"{spliter}{i + 1}", f"  {spliter} {i + 1}:"]
        )
        for i in range(max(0, num_sections + rng.choice([-1, 0, 0, 1])))
    ]
    text = "Intro.\n" + "\n".join(h + "\n" + _sentences(rng, 1) for h in heads)
    out.append(("detectable_format:multiple_sections", {"section_spliter": spliter, "num_sections": num_sections}, text))

    text = rng.choice(
        [
            '{"a": 1}',
            '```json\n{"a": [1, 2]}\n```',
            "```\n[1, 2]\n```",
            "{'a': 1}",
            '```JSON\n{"a": 1}\n```',
            "null",
            '{"a": 1} trailing',
            "```Json\n{}\n```",
            "  [ ]  ",
        ]
    )
    out.append(("detectable_format:json_format", {}, text))

    text = rng.choice(["<<Title>>\n", "<< >>\n", "<<>>\n", "<title>\n", "<<A <<nested>> title>>\n", ""]) + body
    out.append(("detectable_format:title", {}, text))

    sep = "******"
    a, b = _sentences(rng, 1), rng.choice([_sentences(rng, 1), None])
    text = rng.choice(
        [
            f"{a}\n{sep}\n{b or a}",
            f"{a}{sep}{b or a}",
            f"{a}\n*******\n{b or a}",
            f"{a}\n{sep}\n{sep}\n{b or a}",
            f"{sep}\n{a}\n{sep}",
        ]
    )
    out.append(("combination:two_responses", {}, text))

    prompt = _sentences(rng, 1)
    text = rng.choice([prompt, prompt.upper(), prompt[:-1], " " + prompt, "Sure. " + prompt]) + " " + body
    out.append(("combination:repeat_prompt", {"prompt_to_repeat": prompt}, text))

    end_phrase = rng.choice(["Is there anything else I can help with?", "Any other questions?", "That is all."])
    text = (
        body
        + " "
        + rng.choice([end_phrase, end_phrase.lower(), end_phrase + " ", end_phrase + "\n", end_phrase[:-1], end_phrase + "!"])
    )
    out.append(("startend:end_checker", {"end_phrase": end_phrase}, text))

    capital_frequency = rng.randint(1, 6)
    n = max(0, capital_frequency + rng.choice([-1, 0, 1]))
    caps = [rng.choice(["USA", "NASA", "I", "A", "IT'S", "U.S.", "OK", "B2B", "ÉTÉ"]) for _ in range(n)]
    text = body + " " + " ".join(caps)
    out.append(
        ("change_case:capital_word_frequency", {"capital_frequency": capital_frequency, "capital_relation": _relation(rng)}, text)
    )

    text = rng.choice([body.upper(), body.upper() + " ok", _FOREIGN["de"].upper(), "123 !!!", body.title()])
    out.append(("change_case:english_capital", {}, text))

    text = rng.choice([body.lower(), body.lower() + " OK", _FOREIGN["fr"].lower(), "123 !!!", body.lower() + " I"])
    out.append(("change_case:english_lowercase", {}, text))

    text = body + rng.choice(["", ",", "，", " , ", "、", ";"])
    out.append(("punctuation:no_comma", {}, text))

    text = rng.choice([f'"{body}"', f"“{body}”", f'"{body}', f'  "{body}"  ', '""', '"', f"'{body}'"])
    out.append(("startend:quotation", {}, text))
    return [(instruction_id, kwargs, _decorate(rng, response)) for instruction_id, kwargs, response in out]


def generate(path: Path, rounds: int) -> None:
    rng = random.Random(SEED)
    rows = [
        {"id": instruction_id, "kwargs": kwargs, "response": response}
        for _ in range(rounds)
        for instruction_id, kwargs, response in _cases(rng)
    ]
    _write(path, rows)
    print(f"{path}: {len(rows)} pairs, {path.stat().st_size / 1e3:.0f} kB")


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same corpus gives the same bytes.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        for row in rows:
            f.write((json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))


def read(path: Path = CORPUS) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# --- verdicts --------------------------------------------------------------------------------


def _punkt_from_ours(root: Path) -> None:
    """Writes NLTK's punkt_tab/english from arbitrage/ifeval/punkt_english.tsv under `root`."""
    from arbitrage.ifeval.punkt import _english

    params = _english()
    folder = root / "tokenizers" / "punkt_tab" / "english"
    folder.mkdir(parents=True)
    (folder / "abbrev_types.txt").write_text("".join(f"{a}\n" for a in sorted(params.abbrev_types)), encoding="utf-8")
    (folder / "sent_starters.txt").write_text("".join(f"{s}\n" for s in sorted(params.sent_starters)), encoding="utf-8")
    (folder / "collocations.tab").write_text("".join(f"{a}\t{b}\n" for a, b in sorted(params.collocations)), encoding="utf-8")
    (folder / "ortho_context.tab").write_text(
        "".join(f"{w}\t{f}\n" for w, f in sorted(params.ortho_context.items())), encoding="utf-8"
    )


def _reference(wheel: Path) -> types.ModuleType:
    """lm_eval.tasks.ifeval's registry and utils loaded from the wheel, without lm_eval's package."""
    folder = Path(tempfile.mkdtemp(prefix="ifeval-ref-"))
    with zipfile.ZipFile(wheel) as archive:
        for name in ("instructions.py", "instructions_registry.py", "instructions_util.py", "utils.py"):
            (folder / name).write_bytes(archive.read(f"lm_eval/tasks/ifeval/{name}"))
    for package in ("lm_eval", "lm_eval.tasks", "lm_eval.tasks.ifeval"):
        module = types.ModuleType(package)
        module.__path__ = [str(folder)] if package.endswith("ifeval") else []
        sys.modules[package] = module
    modules = {}
    for name in ("instructions_util", "instructions", "instructions_registry", "utils"):
        spec = importlib.util.spec_from_file_location(f"lm_eval.tasks.ifeval.{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        modules[name] = module
    return modules["utils"]


def verdicts(path: Path, wheel: Path, punkt: str) -> None:
    import os

    if punkt == "ours":
        root = Path(tempfile.mkdtemp(prefix="nltk-data-"))
        _punkt_from_ours(root)
        os.environ["NLTK_DATA"] = str(root)
    import langdetect
    import nltk

    if punkt == "ours":
        nltk.data.path[:] = [os.environ["NLTK_DATA"]]
    langdetect.DetectorFactory.seed = 0
    utils = _reference(wheel)
    rows = read(path)
    for row in rows:
        example = utils.InputExample(key=0, instruction_id_list=[row["id"]], prompt="", kwargs=[row["kwargs"]])
        row["strict"] = utils.test_instruction_following_strict(example, row["response"]).follow_all_instructions
        row["loose"] = utils.test_instruction_following_loose(example, row["response"]).follow_all_instructions
    _write(path, rows)
    print(f"{path}: reference verdicts for {len(rows)} pairs (nltk {nltk.__version__}, punkt_tab: {punkt})")


# --- check -----------------------------------------------------------------------------------


def disagreements(rows: list[dict]) -> tuple[Counter, Counter, list[tuple[str, dict, str, str, bool, bool]]]:
    """(pairs per id, agreeing verdicts per id, disagreements as (id, kwargs, response, mode, ours, reference))."""
    from arbitrage import ifeval

    total: Counter = Counter()
    agree: Counter = Counter()
    wrong = []
    for row in rows:
        constraint = {"type": row["id"], **row["kwargs"]}
        total[row["id"]] += 1
        for mode, function in (("strict", ifeval.check), ("loose", ifeval.check_loose)):
            ours = function(constraint, row["response"])
            if ours == row[mode]:
                agree[row["id"]] += 1
            else:
                wrong.append((row["id"], row["kwargs"], row["response"], mode, ours, row[mode]))
    return total, agree, wrong


def check(path: Path) -> int:
    rows = read(path)
    if "strict" not in rows[0]:
        print(f"error: {path} has no reference verdicts; run `python bench/ifeval_oracle.py verdicts` first")
        return 2
    total, agree, wrong = disagreements(rows)
    print(f"{'instruction id':50} pairs  strict+loose agree")
    for instruction_id in sorted(total):
        print(f"{instruction_id:50} {total[instruction_id]:5}  {agree[instruction_id]:5}/{2 * total[instruction_id]}")
    passes = Counter((row["strict"], row["loose"]) for row in rows)
    print(
        f"all: {sum(agree.values())}/{2 * len(rows)} verdicts agree on {len(rows)} pairs; reference (strict, loose): {dict(passes)}"
    )
    for instruction_id, kwargs, response, mode, ours, reference in wrong:
        print(f"DISAGREE {mode} {instruction_id} {kwargs} ours={ours} reference={reference}: {response!r}")
    return 1 if wrong else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write the seeded fuzz corpus")
    g.add_argument("--rounds", type=int, default=120, help="cases per instruction id")
    v = sub.add_parser("verdicts", help="store the reference's strict and loose verdicts in the corpus")
    v.add_argument("--lm-eval", type=Path, required=True, help="an lm-eval wheel (pip download --no-deps lm-eval)")
    v.add_argument("--punkt", choices=["ours", "nltk"], default="ours", help="punkt_tab from our table, or NLTK's installed data")
    sub.add_parser("check", help="our verdicts against the stored ones")
    for p in sub.choices.values():
        p.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()
    if args.command == "generate":
        generate(args.corpus, args.rounds)
    elif args.command == "verdicts":
        verdicts(args.corpus, args.lm_eval, args.punkt)
    else:
        return check(args.corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
