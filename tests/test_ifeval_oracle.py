"""arbitrage.ifeval against the reference's verdicts stored in bench/data/ifeval_fuzz.jsonl.gz.

The corpus (3,000 seeded fuzz pairs, 120 per instruction id, passing and failing near each rule's
edge) and its strict and loose verdicts come from `bench/ifeval_oracle.py generate` and `verdicts`,
which ran IFEval's reference code (lm-eval 0.4.13, NLTK 3.10.4); this test needs neither. After a
change to arbitrage/ifeval, a disagreement here names the pair. No known exceptions.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

from arbitrage.ifeval import IDS, check, check_loose

CORPUS = Path(__file__).parent.parent / "bench" / "data" / "ifeval_fuzz.jsonl.gz"


def _rows() -> list[dict]:
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_corpus_covers_every_instruction_with_both_verdicts():
    rows = _rows()
    assert Counter(row["id"] for row in rows) == dict.fromkeys(IDS, 120)
    for instruction_id in IDS:
        verdicts = {(row["strict"], row["loose"]) for row in rows if row["id"] == instruction_id}
        # Each id has pairs the reference passes and pairs it fails, so a check stuck at one answer fails here.
        assert {strict for strict, _ in verdicts} == {True, False} or {loose for _, loose in verdicts} == {True, False}, (
            instruction_id
        )


def test_strict_and_loose_verdicts_match_the_reference():
    wrong = []
    for row in _rows():
        constraint = {"type": row["id"], **row["kwargs"]}
        for mode, function in (("strict", check), ("loose", check_loose)):
            if function(constraint, row["response"]) != row[mode]:
                wrong.append(f"{mode} {row['id']} {row['kwargs']} reference={row[mode]}: {row['response']!r}")
    assert not wrong, f"{len(wrong)} disagreements:\n" + "\n".join(wrong[:20])
