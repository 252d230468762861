"""What the packaged SmolLM2-135M wrote as a simulated user, and what the cleaning makes of it
(texts from a 24-conversation run of experiment=demo conversation.user=smollm2, BENCHMARKS.md)."""

import pytest

from arbitrage.prompts.conversation import UserSimulator, clean_follow_up, echoes_instructions
from arbitrage.rows import Candidate


def written(text: str) -> str | None:
    return UserSimulator.written(Candidate("c", "p", "u", text, "stop", 1, 1, 0.0, 1))


@pytest.mark.parametrize(
    "text",
    [
        # a paraphrase around the `challenge` kind's description, not a user's message
        "In the last message, the user doubts or challenges one specific point of the assistant's previous answer.",
        'In a sentence from the previous response: "The user\'s next message: a follow-up question that goes deeper into it"',
        "Write the user's next message: a request to redo the assistant's last answer in another form.",
    ],
)
def test_a_follow_up_that_repeats_six_words_of_the_instructions_is_none(text):
    assert echoes_instructions(text) and written(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "Can you explain it again in one or two sentences?",  # the template says "in one or two sentences" too
        "Why is the first person in your story never named?",
        "Could you give me a follow-up question I can ask my students?",
    ],
)
def test_a_user_who_uses_a_few_of_the_same_words_is_kept(text):
    assert not echoes_instructions(text) and written(text) == text


def test_a_lead_in_that_ends_with_a_colon_is_not_the_message():
    text = "Here's a continuation of the conversation:\n\nThe question:\n\nHow does this code compare to the first one?\n\nThe answer: …"
    assert clean_follow_up(text) == "How does this code compare to the first one?"
    assert clean_follow_up("Here's a possible response:") is None
    assert clean_follow_up("Here is my worry: the dough never rises.") == "Here is my worry: the dough never rises."
