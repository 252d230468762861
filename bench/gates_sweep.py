"""SFT rows kept against rows that ignore their instructions, for each selection setting, on one run.

    arbitrage experiment=demo out=runs/demo-gates                      # generate once
    python bench/gates_sweep.py -- experiment=demo out=runs/demo-gates  # re-select under each setting

Selection is not part of a run's identity, so each setting re-selects from the run's journal
without sending a request (the run folder is rewritten each time; the last setting listed is left
in place: the default). Prints a markdown table from each rewrite's summary.json: rows kept, and
among the sft rows those whose answer fails a gate (a known final answer), fails any check, or
scores 0. BENCHMARKS.md, "Gates: rows you can trust".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SETTINGS = {
    "gates=off (before)": ["selection.gates=off"],
    "require=gates": ["selection.require=gates"],
    "require=min_reward 0.01 (a check passed)": ["selection.require=min_reward", "selection.min_reward=0.01"],
    "require=min_reward 0.5": ["selection.require=min_reward", "selection.min_reward=0.5"],
    "require=all_checks": ["selection.require=all_checks"],
    "the default (conf/selection/default.yaml)": [],
}


def share(n: int, of: int) -> str:
    return f"{n} ({n / of:.0%})" if of else "0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="+", help="the run's own overrides, after --")
    args = parser.parse_args()
    out = Path(next(o.split("=", 1)[1] for o in args.overrides if o.startswith("out=")))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    lines = [
        "| selection | sft | dpo | rejected_rows | sft failing a gate | sft failing any check | sft scoring 0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, extra in SETTINGS.items():
        cmd = [sys.executable, "-m", "arbitrage.cli", *args.overrides, *extra, "progress=false", "report=false"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.exit(f"{label}: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        s = json.loads((out / "summary.json").read_text())
        rows, failing, sft = s["rows"], s.get("sft_failing", {}), s["rows"]["sft"]

        lines.append(
            f"| {label} | {sft} | {rows['dpo']} | {rows['rejected_rows']} | {share(failing.get('a gate', 0), sft)} "
            f"| {share(failing.get('a check', 0), sft)} | {share(failing.get('reward 0', 0), sft)} |"
        )
        print(f"{label}: gates dropped {s.get('gates_dropped')}", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
