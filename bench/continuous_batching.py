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

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from arbitrage.prompts import personas

ROOT = Path(__file__).resolve().parent.parent
IN_FLIGHT = 64


def teacher_and_prompts(name: str, n: int):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"teacher=[{name}]"])
    settings = OmegaConf.to_container(cfg.teacher[name], resolve=True)
    settings.pop("price", None)
    teacher = instantiate(settings, name=name)
    tasks = {k: dict(v["templates"]) for k, v in OmegaConf.to_container(cfg.tasks).items()}
    persona_list = personas.load_personas(sorted((ROOT / "personas").glob("[a-z][a-z].jsonl")))
    return teacher, personas.synthesise(persona_list, personas.SynthesisSpec(tasks=tasks, n_prompts=n, seed=5))


def static(teacher, prompts) -> int:
    return sum(c.tokens_out for i in range(0, len(prompts), IN_FLIGHT) for c in teacher._generate(prompts[i : i + IN_FLIGHT]))


def continuous(teacher, prompts) -> int:
    llm = teacher._llm
    engine, tokenizer = llm.llm_engine, llm.get_tokenizer()
    pending, active, done, tokens = list(prompts), 0, 0, 0
    while done < len(prompts):
        while active < IN_FLIGHT and pending:
            prompt = pending.pop(0)
            if teacher.mode == "completion":
                text = teacher.render(prompt)
            else:
                text = tokenizer.apply_chat_template(list(prompt.messages), tokenize=False, add_generation_prompt=True)
            engine.add_request(prompt.prompt_id, text, teacher._sampling(prompt))
            active += 1
        for out in engine.step():
            if out.finished:
                done, active = done + 1, active - 1
                tokens += len(out.outputs[0].token_ids)
    return tokens


def main() -> None:
    name, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    teacher, prompts = teacher_and_prompts(name, n)
    asyncio.run(teacher.start())
    started = time.perf_counter()
    tokens = (static if mode == "static" else continuous)(teacher, prompts)
    elapsed = time.perf_counter() - started
    print(f"{name} {mode} n={n}: {elapsed:.1f}s tokens={tokens} tok/s={tokens / elapsed:.1f}", flush=True)


if __name__ == "__main__":  # vLLM spawns: the guard is required
    main()
