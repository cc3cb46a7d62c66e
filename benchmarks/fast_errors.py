"""Time how soon a wrong --config is answered, against `python -c "import torch"` (the floor of any run).

    python benchmarks/fast_errors.py [--repeats 5]

Each command is a fresh Python process (best of the repeats, after one warm-up run of each that fills
the file cache). Prints seconds and the ratio to `import torch`; the target is at most 0.5.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "main_reco.py --config no_such.yaml": [sys.executable, str(REPO / "main_reco.py"), "--config", "no_such.yaml"],
    "main_reco_plus.py --config no_such.yaml": [sys.executable, str(REPO / "main_reco_plus.py"), "--config",
                                                "no_such.yaml"],
}


def best_seconds(command: list[str], repeats: int) -> float:
    subprocess.run(command, cwd=REPO, capture_output=True)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    seconds = {name: best_seconds(command, args.repeats) for name, command in COMMANDS.items()}
    floor = seconds["python -c 'import torch'"]
    for name, s in seconds.items():
        print(f"{name:<42} {s:6.2f} s   {s / floor:5.2f}x import torch")


if __name__ == "__main__":
    main()
