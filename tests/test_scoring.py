import asyncio

import pytest
from conftest import make_candidate, make_prompt
from fake_openai import FakeOpenAI

from arbitrage.errors import ConfigError
from arbitrage.scoring import WeightedScorer
from arbitrage.scoring.judge import JudgeScorer
from arbitrage.scoring.reward_model import RewardModelScorer
from arbitrage.scoring.verifiable import VerifiableScorer
from arbitrage.teachers.openai_compat import OpenAICompatTeacher


def run(coro):
    return asyncio.run(coro)


def test_verifiable_scores_fraction_of_checks_with_breakdown():
    prompt = make_prompt([{"type": "no_commas"}, {"type": "max_words", "n": 5}, {"type": "lowercase"}])
    good, half = make_candidate("all lowercase no commas"), make_candidate("Has, commas")
    scores = run(VerifiableScorer().score([(prompt, good), (prompt, half)]))
    assert scores[0].value == 1.0 and scores[0].details["checks"] == {"no_commas": True, "max_words": True, "lowercase": True}
    assert scores[1].value == pytest.approx(1 / 3)
    truncated = make_candidate("all lowercase no commas", finish_reason="length")
    assert run(VerifiableScorer(truncated_penalty=0.5).score([(prompt, truncated)]))[0].value == 0.5


def test_weighted_sum_combines_scorers():
    prompt = make_prompt([{"type": "no_commas"}, {"type": "lowercase"}])
    weighted = WeightedScorer(
        {"a": {"scorer": VerifiableScorer(), "weight": 3}, "b": {"scorer": VerifiableScorer(truncated_penalty=1.0), "weight": 1}}
    )
    weighted.check()
    score = run(weighted.score([(prompt, make_candidate("lowercase, commas", finish_reason="length"))]))[0]
    assert score.value == pytest.approx((3 * 0.5 + 1 * 0.0) / 4)
    assert score.details["a"]["score"] == 0.5 and score.details["b"]["score"] == 0.0
    with pytest.raises(ConfigError):
        WeightedScorer({}).check()


def test_judge_reads_logprobs_from_an_openai_compatible_endpoint():
    with FakeOpenAI() as server:
        judge = JudgeScorer(OpenAICompatTeacher("judge", "judge-model", server.url, top_logprobs=5, temperature=0.0))
        judge.check()
        prompt = make_prompt()
        items = [
            (prompt, make_candidate("short", teacher="a")),
            (prompt, make_candidate("a much longer answer here", teacher="b")),
        ]
        scores = run(judge.score(items))
        run(judge.close())
        sent = [r["body"] for r in server.requests]
    assert len(sent) == 2 and all(b["logprobs"] and b["top_logprobs"] == 5 for b in sent)
    for s in scores:
        assert s.details["source"] == "logprobs"
        # The fake rates r with p∝e^-0.1 and r+1 with p∝e^-2.5: expected value between them.
        r = s.details["rating"]
        assert int(r) < r < int(r) + 0.2 and s.value == pytest.approx((r - 1) / 8, abs=1e-6)


def test_judge_falls_back_to_text_and_marks_unparsed():
    judge = JudgeScorer(OpenAICompatTeacher("judge", "m", "http://127.0.0.1:9"))
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
    scores = [s.value for s in run(scorer.score(items))]
    assert scores[0] > scores[1] and scores[2] > scores[1]


def test_reward_model_check_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        RewardModelScorer(str(tmp_path)).check()
    with pytest.raises(ConfigError, match="not in the local HF cache"):
        RewardModelScorer("nobody/no-such-reward-model").check()
