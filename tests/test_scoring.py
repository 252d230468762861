import asyncio

import pytest
from conftest import make_candidate, make_prompt
from fake_openai import FakeOpenAI, Script

from arbitrage.engine import Engine, Journal, RetryPolicy
from arbitrage.errors import ConfigError
from arbitrage.routers import Route
from arbitrage.rows import Scored
from arbitrage.scoring import WeightedScorer
from arbitrage.scoring.judge import JudgeScorer
from arbitrage.scoring.reward_model import RewardModelScorer
from arbitrage.scoring.verifiable import VerifiableScorer
from arbitrage.select import SelectionSpec, select
from arbitrage.teachers.openai_compat import OpenAICompatTeacher


def run(coro):
    return asyncio.run(coro)


def judged(scorer, items, tmp_path, budget=None):
    """Score through a real engine, as the pipeline does: the judge's calls are engine calls."""

    async def go():
        async with Engine(dict(scorer.teachers), Journal(tmp_path / "journal"), RetryPolicy(3, 0.01, 0.05), budget) as engine:
            answers = await engine.run(scorer.calls(items))
            return engine, await scorer.score(items, {a.call_id: a for a in answers})

    return run(go())


def test_verifiable_scores_fraction_of_checks_with_breakdown():
    prompt = make_prompt([{"type": "no_commas"}, {"type": "max_words", "n": 5}, {"type": "lowercase"}])
    good, half = make_candidate("all lowercase no commas"), make_candidate("Has, commas")
    scorer = VerifiableScorer()
    assert scorer.calls([(prompt, good)]) == [] and scorer.teachers == {}
    scores = run(scorer.score([(prompt, good), (prompt, half)], {}))
    assert scores[0].value == 1.0 and scores[0].checks == {"no_commas": True, "max_words": True, "lowercase": True}
    assert scores[0].gates == frozenset() and scores[1].checks["no_commas"] is False
    assert scores[1].value == pytest.approx(1 / 3)
    truncated = make_candidate("all lowercase no commas", finish_reason="length")
    assert run(VerifiableScorer(truncated_penalty=0.5).score([(prompt, truncated)], {}))[0].value == 0.5


def test_weighted_sum_combines_scorers():
    prompt = make_prompt([{"type": "no_commas"}, {"type": "lowercase"}])
    weighted = WeightedScorer(
        {"a": {"scorer": VerifiableScorer(), "weight": 3}, "b": {"scorer": VerifiableScorer(truncated_penalty=1.0), "weight": 1}}
    )
    weighted.check()
    score = run(weighted.score([(prompt, make_candidate("lowercase, commas", finish_reason="length"))], {}))[0]
    assert score.value == pytest.approx((3 * 0.5 + 1 * 0.0) / 4)
    assert score.details["a"]["score"] == 0.5 and score.details["b"]["score"] == 0.0
    # the parts' verdicts merged in one dict; a check id two parts share is kept apart
    assert score.checks == {"no_commas": False, "lowercase": True, "b/no_commas": False, "b/lowercase": True}
    with pytest.raises(ConfigError):
        WeightedScorer({}).check()


def test_known_answers_and_checks_marked_gate_are_gates():
    prompt = make_prompt(
        [
            {"type": "arbitrage:final_number", "answer": "3/4"},
            {"type": "punctuation:no_comma"},
            {"type": "arbitrage:lowercase", "gate": True},
            {"type": "punctuation:no_comma", "gate": False},
        ],
        task="math",
    )
    score = run(VerifiableScorer().score([(prompt, make_candidate("so the answer is \\boxed{0.75}"))], {}))[0]
    assert score.checks == {
        "arbitrage:final_number": True,
        "punctuation:no_comma": True,
        "arbitrage:lowercase": True,
        "punctuation:no_comma#2": True,
    }
    assert score.gates == {"arbitrage:final_number", "arbitrage:lowercase"}
    weighted = WeightedScorer({"v": {"scorer": VerifiableScorer()}})
    merged = run(weighted.score([(prompt, make_candidate("Wrong: 1/2"))], {}))[0]
    assert merged.gates == score.gates and merged.checks["arbitrage:final_number"] is False
    assert "checks" not in merged.details["v"]  # verdicts live in `checks`, not in a part's details


def judge_teacher(url, **sampling):
    return OpenAICompatTeacher("judge", "judge-model", url, sampling={"temperature": 0.0, "max_tokens": 2, **sampling})


def test_judge_reads_logprobs_through_the_engine_and_a_resume_reuses_its_judgments(tmp_path):
    prompt = make_prompt()
    items = [
        (prompt, make_candidate("short", teacher="a")),
        (prompt, make_candidate("a much longer answer here", teacher="b")),
    ]
    with FakeOpenAI() as server:
        judge = JudgeScorer(judge_teacher(server.url, logprobs=5))
        judge.check()
        _, scores = judged(judge, items, tmp_path)
        sent = [r["body"] for r in server.requests]
        _, again = judged(JudgeScorer(judge_teacher(server.url, logprobs=5)), items, tmp_path)
        assert len(server.requests) == 2  # the journal had both judgments
    assert len(sent) == 2 and all(b["logprobs"] and b["top_logprobs"] == 5 for b in sent)
    assert [s.value for s in again] == [s.value for s in scores]
    for s in scores:
        assert s.details["source"] == "logprobs" and s.error is None
        # The fake rates r with p∝e^-0.1 and r+1 with p∝e^-2.5: expected value between them.
        r = s.details["rating"]
        assert int(r) < r < int(r) + 0.2 and s.value == pytest.approx((r - 1) / 8, abs=1e-6)


def test_a_judgment_that_fails_is_a_failure_never_a_score(tmp_path):
    """A single 429 used to score an answer 0.0, which could then become the DPO `rejected`. Now
    the engine retries it, and one that still fails is a failure with its reason."""
    prompt = make_prompt()
    items = [(prompt, make_candidate("one", teacher="a")), (prompt, make_candidate("two", teacher="b"))]
    with FakeOpenAI(Script(fail_first=1, fail_status=429, retry_after="0.01")) as server:
        engine, scores = judged(JudgeScorer(judge_teacher(server.url)), items, tmp_path / "retried")
    assert all(s.value is not None for s in scores) and engine.stats["judge"].retries == 2
    with FakeOpenAI(Script(fail_first=99, fail_status=503)) as server:
        _, scores = judged(JudgeScorer(judge_teacher(server.url)), items, tmp_path / "failed")
    assert all(s.value is None and s.error.startswith("judge: HTTP 503") for s in scores)
    with FakeOpenAI(Script(answers={"judge-model": "excellent"})) as server:
        _, scores = judged(JudgeScorer(judge_teacher(server.url)), items, tmp_path / "unparsed")
    assert all(s.value is None and "no rating" in s.error for s in scores)
    rows = [Scored(c, s.value, s.details, error=s.error) for (_, c), s in zip(items, scores, strict=True)]
    selection = select(prompt, Route(("a", "b"), "all"), rows, SelectionSpec())
    assert selection.chosen is None and selection.rejected is None and "no rating" in str(selection.reason)


def test_weighted_fails_when_a_part_fails(tmp_path):
    prompt = make_prompt([{"type": "lowercase"}])
    with FakeOpenAI(Script(fail_first=99, fail_status=400)) as server:
        weighted = WeightedScorer(
            {
                "v": {"scorer": VerifiableScorer(), "weight": 1},
                "j": {"scorer": JudgeScorer(judge_teacher(server.url)), "weight": 1},
            }
        )
        _, scores = judged(weighted, [(prompt, make_candidate("fine"))], tmp_path)
    assert scores[0].value is None and scores[0].error.startswith("j: judge: HTTP 400") and scores[0].details["v"]["score"] == 1.0


def test_judge_falls_back_to_text_and_marks_unparsed():
    judge = JudgeScorer(judge_teacher("http://127.0.0.1:9"))
    assert judge.rating("Score: 7", None) == (7.0, "text")
    assert judge.rating("great!", None) == (None, "unparsed")
    with pytest.raises(ConfigError, match="must contain"):
        JudgeScorer(judge.judge, template="no placeholders").check()


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory):
    """A real sequence classifier, trained here in seconds to prefer polite, on-topic answers."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    good = ["thank you here is a clear answer", "here is a helpful clear explanation", "happy to help here is the answer"]
    bad = ["no go away", "i will not answer that", "stupid question go away"]
    words = sorted({w for s in good + bad + ["user", "assistant", "explain", "photosynthesis", ":"] for w in s.split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=1
        )
    )
    texts = [f"user: explain photosynthesis\n\nassistant: {s}" for s in good + bad]
    labels = torch.tensor([1.0] * len(good) + [-1.0] * len(bad))
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model(**batch).logits[:, 0], labels)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    out = tmp_path_factory.mktemp("rm")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_reward_model_ranks_like_its_training(tiny_reward_model):
    scorer = RewardModelScorer(str(tiny_reward_model), batch_size=2)
    scorer.check()
    prompt = make_prompt()
    items = [
        (prompt, make_candidate(t))
        for t in ["happy to help here is a clear answer", "go away stupid question", "thank you here is the answer"]
    ]
    scores = [s.value for s in run(scorer.score(items, {}))]
    assert scores[0] > scores[1] and scores[2] > scores[1]


def test_reward_model_check_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        RewardModelScorer(str(tmp_path)).check()
    with pytest.raises(ConfigError, match="not in the local HF cache"):
        RewardModelScorer("nobody/no-such-reward-model").check()
