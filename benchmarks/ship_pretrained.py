"""Ship a finished run's trained model in the package: src/vaelab/pretrained/NAME with its model card.

    python benchmarks/ship_pretrained.py --run /work/trained/mnist-2d --name mnist-2d --samples 5000 \\
        --command "vaelab train --preset mnist-2d --set train.threads=1"

It reads the run (never writes it), takes its test evaluation of the current weights with the
largest K (or, with --samples K and none as large, scores one on all test images), copies the
weights (no checkpoint), config, summary, metrics and that evaluation into a folder beside
src/vaelab/pretrained/NAME, scores the card's check (K = 100 on test images 0-999, seed 0) from
the weights shipped, writes card.json and card.md, scores the check again, then renames the folder
into place (replacing an older one) and prints the card. Run it on the machine that trained the
run: the card names this machine's CPU (--cpu to name another). --half float16 (or bfloat16) ships
half-precision weights, scored again at the same K over the whole test set, only where the test
NLL moves less than 0.1 nats.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
from pathlib import Path

import vaelab
from vaelab.runs import SHIPPED_ROOT, CARD_TEXT
from vaelab.shipped import CHECK, HALF_DTYPES, ship

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (/proc/cpuinfo), else what Python knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(tree: Path) -> str | None:
    """The commit checked out in `tree`, with "+changes" when its tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished run folder")
    parser.add_argument("--name", required=True, help="the shipped name (pretrained:NAME), e.g. the preset's")
    parser.add_argument("--command", help="the command that trained it (default: vaelab train --preset PRESET)")
    parser.add_argument("--samples", type=int, help="K of the test NLL to score when the run has no test "
                        "evaluation with at least this K (5000 as benchmarks/README.md scores)")
    parser.add_argument("--half", choices=HALF_DTYPES, help="ship the weights in this dtype (checked: < 0.1 nats)")
    parser.add_argument("--cpu", help="the CPU that trained the run (default: this machine's)")
    parser.add_argument("--commit", help="the vaelab commit that trained it (default: this checkout's)")
    parser.add_argument("--check-images", type=int, default=CHECK["stop"], help="test images of the check")
    parser.add_argument("--check-k", type=int, default=CHECK["k"], help="K of the check")
    parser.add_argument("--root", default=str(SHIPPED_ROOT), help="where shipped models live (default the package's)")
    args = parser.parse_args()

    preset = vaelab.open_run(args.run).config.name
    command = args.command or f"vaelab train --preset {preset}"
    machine = {"cpu": args.cpu or cpu_model()}
    software = {"vaelab": vaelab.__version__, "commit": args.commit or git_commit(REPO)}
    check = CHECK | {"k": args.check_k, "stop": CHECK["start"] + args.check_images}
    ship(args.run, args.name, command=command, machine=machine, software=software, samples=args.samples,
         half=args.half, root=args.root, check=check)
    print((Path(args.root) / args.name / CARD_TEXT).read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    main()
