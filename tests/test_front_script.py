"""studies/front-searched.sh, comparison 8 with searched winners: which commands it runs, what
it skips when rerun, and the plan it hands the study (the commands themselves are tested by
the search, export and study tests). A stand-in for raydistill records every call."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from raydistill.commands.study import load_plan

REPO = Path(__file__).resolve().parents[1]
METHODS = ["dice", "kd", "arm", "star", "distil"]

FAKE = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [[ $1 == export ]]; then  # write what raydistill export writes: the winner's best.yaml
  while (($#)); do [[ $1 == --out ]] && out=$2; shift; done
  mkdir -p "$out" && cp "$WINNER" "$out/best.yaml"
fi
"""


def run_script(tmp_path: Path, *args: str) -> list[str]:
    fake = tmp_path / "raydistill"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    winner = tmp_path / "winner.yaml"
    if not winner.exists():
        train = load_plan(REPO / "studies" / "papers.yaml").arms["dice-narrow"].config
        winner.write_text(yaml.safe_dump({"train": train}))
    calls = tmp_path / "calls.txt"
    calls.unlink(missing_ok=True)
    env = {**os.environ, "RAYDISTILL": str(fake), "CALLS": str(calls), "WINNER": str(winner)}
    subprocess.run(["bash", str(REPO / "studies" / "front-searched.sh"), *args], check=True, env=env, cwd=tmp_path,
                   capture_output=True, text=True)
    return calls.read_text().splitlines()


def test_one_search_and_export_per_method_then_the_study_of_the_winners(tmp_path):
    work = tmp_path / "work"
    calls = run_script(tmp_path, "--trials", "3", "--workdir", str(work), "--smoke")
    searches = [c for c in calls if c.startswith("search ")]
    assert [c.split("--space ")[1].split()[0] for c in searches] == [f"search_spaces/{m}.yaml" for m in METHODS]
    assert all("--trials 3" in c and "--confirm 2" in c and c.endswith("--smoke") and "--resume" not in c
               for c in searches)
    exports = [c for c in calls if c.startswith("export ")]
    assert [c.split("--out ")[1].split()[0] for c in exports] == [f"{work}/front/{m}" for m in METHODS]
    assert calls[-1].startswith(f"study --plan {work}/front/front-searched.yaml") and calls[-1].endswith("--smoke")
    # the plan it wrote names this workdir's exports, and loads: five arms, each its winner
    plan = load_plan(work / "front" / "front-searched.yaml", smoke=True)
    assert sorted(plan.arms) == sorted(METHODS)
    assert {arm.space for arm in plan.arms.values()} == {f"{work.resolve()}/front/{m}/best.yaml" for m in METHODS}

    # rerun: exported methods are skipped; an interrupted search (its tuner state on disk) resumes
    (work / "front" / "kd" / "best.yaml").unlink()
    (work / "ray_results" / "front-kd").mkdir(parents=True)
    (work / "ray_results" / "front-kd" / "tuner.pkl").write_text("")
    again = run_script(tmp_path, "--workdir", str(work))
    assert [c for c in again if c.startswith("search ")] == [
        f"search --space search_spaces/kd.yaml --trials 24 --confirm 2 --name front-kd --workdir {work} --resume"]
    assert again[-1] == f"study --plan {work}/front/front-searched.yaml --workdir {work}"
