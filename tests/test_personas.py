import json
from collections import Counter

import pytest
import yaml

from arbitrage.errors import ConfigError
from arbitrage.prompts import jsonl
from arbitrage.prompts.personas import SynthesisSpec, load_personas, synthesise

LANGS = ["en", "es", "fr", "de", "pt", "it"]


@pytest.fixture
def tasks(root):
    return {name: spec["templates"] for name, spec in yaml.safe_load((root / "conf/tasks/default.yaml").read_text()).items()}


@pytest.fixture
def all_personas(root):
    return load_personas([root / f"personas/{lang}.jsonl" for lang in LANGS])


def test_persona_files_are_diverse(all_personas, root):
    assert len(all_personas) >= 200
    assert len({p.language for p in all_personas}) >= 5
    assert len({p.domain for p in all_personas}) >= 10
    assert len({p.persona for p in all_personas}) == len(all_personas)
    demo = load_personas([root / "personas/demo.jsonl"])
    by_id = {p.id: p for p in all_personas}
    assert all(by_id[p.id] == p for p in demo), "demo.jsonl is a subset of the language files"


def test_synthesis_is_deterministic_unique_and_balanced(all_personas, tasks):
    spec = SynthesisSpec(tasks=tasks, n_prompts=300, seed=7)
    first, second = synthesise(all_personas, spec), synthesise(all_personas, spec)
    assert [p.prompt_id for p in first] == [p.prompt_id for p in second]
    assert len({p.prompt_id for p in first}) == 300
    assert len({p.user_text for p in first}) == 300
    languages = Counter(p.language for p in first)
    assert set(languages) == set(LANGS) and min(languages.values()) >= 40
    assert set(Counter(p.task for p in first)) == set(tasks)
    other_seed = synthesise(all_personas, SynthesisSpec(tasks=tasks, n_prompts=300, seed=8))
    assert {p.prompt_id for p in other_seed} != {p.prompt_id for p in first}


def test_prompts_carry_checkable_constraints_in_their_language(all_personas, tasks):
    prompts = synthesise(all_personas, SynthesisSpec(tasks=tasks, n_prompts=120, seed=1))
    for p in prompts:
        assert p.messages[-1]["role"] == "user"
        assert 1 <= len(p.constraints) <= 3
        persona = next(x for x in all_personas if x.id == p.persona_id)
        assert persona.persona in p.user_text and p.language == persona.language
        if p.task == "math":
            whole = __import__("re").search(r"(\d+) × (\d+) \+ (\d+)", p.user_text)
            if whole:  # the other math prompts' exact answers: tests/test_references.py
                a, b, c = (int(x) for x in whole.groups())
                assert p.reference == str(a * b + c)
            assert {"type": "arbitrage:final_number", "answer": p.reference} in p.constraints
        if p.task == "code":
            assert {"type": "arbitrage:code_block"} in p.constraints
        assert ({"type": "language:response_language", "language": p.language} in p.constraints) == (p.language != "en")
        row = p.to_row()
        assert json.loads(row["constraints"]) == list(p.constraints)


def test_system_prompt_and_language_filter(all_personas, tasks):
    spec = SynthesisSpec(tasks=tasks, n_prompts=10, languages=("es",), system_prompt="Hablas con {persona}.")
    prompts = synthesise(all_personas, spec)
    assert {p.language for p in prompts} == {"es"}
    assert all(p.messages[0]["role"] == "system" and p.messages[0]["content"].startswith("Hablas con un") for p in prompts)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"id": "x", "persona": "a cook"\n', "is not valid JSON"),
        ('{"id": "x", "persona": "a cook", "language": "en", "domain": "cooking"}\n', "lacks topics"),
        (
            '{"id": "x", "persona": "a cook", "language": "en", "domain": "cooking", "topics": []}\n',
            "'topics' must be a non-empty list",
        ),
        ("", "no personas in"),
    ],
)
def test_bad_persona_file_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_personas([path])
    assert "\n" not in str(info.value)


def test_missing_file_duplicate_ids_and_missing_language_template(tmp_path, tasks):
    with pytest.raises(ConfigError, match="cannot read persona file"):
        load_personas([tmp_path / "nope.jsonl"])
    line = json.dumps({"id": "x", "persona": "a cook", "language": "xx", "domain": "cooking", "topics": ["bread baking"]})
    (tmp_path / "dup.jsonl").write_text(line + "\n" + line + "\n")
    with pytest.raises(ConfigError, match="duplicate persona id 'x'"):
        load_personas([tmp_path / "dup.jsonl"])
    (tmp_path / "xx.jsonl").write_text(line + "\n")
    with pytest.raises(ConfigError, match=r"xx.jsonl:1: language 'xx' is not supported — supported: de, en, es, fr, it, pt"):
        synthesise(load_personas([tmp_path / "xx.jsonl"]), SynthesisSpec(tasks=tasks, n_prompts=1))


def test_too_many_prompts_and_bad_n(all_personas, tasks):
    with pytest.raises(ConfigError, match="n_prompts must be a positive integer"):
        synthesise(all_personas, SynthesisSpec(tasks=tasks, n_prompts=0))
    one = all_personas[:1]
    with pytest.raises(ConfigError, match="unique prompts can be drawn"):
        synthesise(one, SynthesisSpec(tasks={"explain": tasks["explain"]}, n_prompts=5000, min_constraints=0, max_constraints=0))


def test_a_prompts_file_streams_prompts_and_names_a_bad_line(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [
        {"prompt": "Erkläre Photosynthese.", "language": "de", "task": "explain"},
        {"id": "mine-2", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    digest = jsonl.check_prompt_file(path)
    prompts = list(jsonl.iter_prompt_file(path))
    assert [p.language for p in prompts] == ["de", "en"] and prompts[1].prompt_id == "mine-2"
    assert prompts[1].messages[0]["role"] == "system" and prompts[0].user_text == "Erkläre Photosynthese."
    path.write_text(path.read_text() + '{"messages": [{"role": "assistant", "content": "no user turn"}]}\n')
    with pytest.raises(ConfigError, match=r"line 4: messages\[0\]\.role is 'assistant' — the last turn must be the user's"):
        jsonl.check_prompt_file(path)
    assert len(digest) == 16


def test_a_larger_n_prompts_extends_the_same_prompt_stream(all_personas, tasks):
    """Why n_prompts is not part of a run's identity: a bigger run starts with the smaller one."""
    small = synthesise(all_personas, SynthesisSpec(tasks=tasks, n_prompts=50, seed=3))
    large = synthesise(all_personas, SynthesisSpec(tasks=tasks, n_prompts=200, seed=3))
    assert [p.prompt_id for p in large[:50]] == [p.prompt_id for p in small]


def test_a_prompts_file_line_may_carry_ifeval_annotations(tmp_path):
    """IFEval's input_data.jsonl form (instruction_id_list + kwargs, None for unused arguments)."""
    path = tmp_path / "ifeval.jsonl"
    line = {
        "key": 1000,
        "prompt": "Write a 300+ word summary of the wikipedia page.",
        "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
        "kwargs": [{}, {"num_words": 300, "relation": "at least", "keyword": None}],
    }
    old_names = {"prompt": "Say hi.", "constraints": [{"type": "max_words", "n": 5}]}
    path.write_text(json.dumps(line) + "\n" + json.dumps(old_names) + "\n")
    jsonl.check_prompt_file(path)
    first, second = jsonl.iter_prompt_file(path)
    assert list(first.constraints) == [
        {"type": "punctuation:no_comma"},
        {"type": "length_constraints:number_words", "num_words": 300, "relation": "at least"},
    ]
    assert list(second.constraints) == [{"type": "length_constraints:number_words", "num_words": 5, "relation": "less than"}]
    path.write_text(json.dumps({"prompt": "x", "instruction_id_list": ["keywords:vibes"], "kwargs": [{}]}) + "\n")
    with pytest.raises(ConfigError, match=r"line 1: unknown constraint type 'keywords:vibes'"):
        jsonl.check_prompt_file(path)
    path.write_text(json.dumps({"prompt": "x", "instruction_id_list": ["keywords:existence"], "kwargs": [{}]}) + "\n")
    with pytest.raises(ConfigError, match=r"line 1: constraint 'keywords:existence' needs the argument 'keywords'"):
        jsonl.check_prompt_file(path)
