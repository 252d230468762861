"""Is continuous batching worth it for a local vLLM teacher on CPU? Static chunks of 64
(`LLM.generate`, what VLLMTeacher does) against an `LLMEngine.step` loop that keeps 64 requests
in flight. Same prompts, same per-prompt seeds, same tokens out.

    .venv/bin/python bench/continuous_batching.py gemma3 128 static
    .venv/bin/python bench/continuous_batching.py gemma3 128 continuous
"""

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from arbitrage import personas


def main():
    which = sys.argv[1]
    n = int(sys.argv[2])
    mode = sys.argv[3]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"teacher=[{which}]"])
    node = OmegaConf.to_container(cfg.teacher[which], resolve=True)
    node.pop("price", None)
    t = instantiate(node, name=which)
    tasks = {k: dict(v["templates"]) for k, v in OmegaConf.to_container(cfg.tasks).items()}
    pl = personas.load_personas(sorted(ROOT / "personas".glob("[a-z][a-z].jsonl")))
    ps = personas.synthesise(pl, personas.SynthesisSpec(tasks=tasks, n_prompts=n, seed=5))
    asyncio.run(t.start())
    llm = t._llm
    started = time.perf_counter()
    if mode == "static":
        outs = []
        for i in range(0, n, 64):
            outs += t._generate(ps[i : i + 64])
        toks = sum(c.tokens_out for c in outs)
    else:
        eng = llm.llm_engine
        pending = list(ps)
        active = 0
        toks = 0
        done = 0
        i = 0
        render = (lambda p: t.render(p)) if t.mode == "completion" else None
        while done < n:
            while active < 64 and pending:
                p = pending.pop(0)
                if render:
                    eng.add_request(str(i), render(p), t._sampling(p))
                else:
                    tok = llm.get_tokenizer()
                    text = tok.apply_chat_template(list(p.messages), tokenize=False, add_generation_prompt=True)
                    eng.add_request(str(i), text, t._sampling(p))
                i += 1
                active += 1
            for out in eng.step():
                if out.finished:
                    done += 1
                    active -= 1
                    toks += len(out.outputs[0].token_ids)
    el = time.perf_counter() - started
    print(f"{which} {mode} n={n}: {el:.1f}s tokens={toks} tok/s={toks / el:.1f}", flush=True)


if __name__ == "__main__":
    main()
