"""The first-GPU acceptance check: every CUDA path of the project, measured, in one command (8.5 minutes at
most on one H100/H200). Run through benchmarks/gpu_check.sh; README "First GPU run" says how to read it.

Parts, each in its own process with its own time limit (a crash, an out-of-memory or a hang in one is
reported and the others still run):
  cuda_tests       pytest -m cuda (every test marked cuda; none may be skipped on a GPU)
  crf              torch CRF batched on the GPU vs pydensecrf: ms/img, peak GPU memory, labels equal
  crf_memory       device memory after 100 CRF calls vs after 10, per way of multiplying the lattice
                   factors (RECO_SPARSE_PRODUCT): the default must stay flat; the others are information
  index_build      ViT-L/14@336px (random weights): model-only images/s fp16/bf16 vs the full build
  reco_plus_train  DeepLabv3+ ResNet-101 (random init), crop 320, batch 8, AMP: iterations/s
  own_images       main_reco.py --images end to end with tiny models on the GPU

Prints one table, writes it to OUT/gpu_check.md and everything to OUT/gpu_check.json (logs in
OUT/<part>.log). Exit status 1 if any part fails (error, time-out, labels unequal to pydensecrf); a
missed speed or memory target is marked MISSED in the table and fails only with --strict-targets.
--dry-run (or GPU_CHECK_DEVICE=cpu): tiny sizes on the CPU, to check the script itself.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]

# part -> time limit in seconds on the GPU (sum 510); the dry run has its own, generous for 2 CPU cores
TIMEOUTS = {"cuda_tests": 150, "crf": 75, "crf_memory": 40, "index_build": 120, "reco_plus_train": 60, "own_images": 65}
TIMEOUTS_DRY = {"cuda_tests": 240, "crf": 120, "crf_memory": 60, "index_build": 120, "reco_plus_train": 120, "own_images": 180}
BUDGET_S = 510
MIN_LABELS_EQUAL = 0.99  # the torch CRF agrees with pydensecrf on 100% of the labels in the CPU tests
TARGETS = {"crf_ms": 10.0, "crf_mib_171": 1024.0, "build_ratio": 0.85, "imagenet_minutes": 25.0}


def run_part(name: str, out: Path, dry: bool, timeout: float) -> dict[str, Any]:
    """Run one part in a fresh process (own process group, killed whole on time-out)."""
    log = out / f"{name}.log"
    if name == "cuda_tests":
        command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                   f"--junitxml={out / 'cuda_tests.xml'}", str(REPO / "tests")]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--json", str(out / f"{name}.json")]
        command += ["--dry-run"] if dry else []
    start = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            rc: Optional[int] = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            rc = None
    result: dict[str, Any] = {"part": name, "seconds": time.perf_counter() - start, "returncode": rc,
                              "timed_out": rc is None, "log": str(log)}
    if name == "cuda_tests":
        result["tests"] = _junit_counts(out / "cuda_tests.xml")
    elif rc == 0:
        result["data"] = json.loads((out / f"{name}.json").read_text())
    if rc not in (0, None):
        result["error"] = log.read_text()[-2000:]
    return result


def _junit_counts(path: Path) -> dict[str, int]:
    if not path.is_file():
        return {}
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}


def table_rows(results: dict[str, dict[str, Any]], dry: bool) -> list[dict[str, str]]:
    """One row per measured value: check, value, target, status (ok / FAIL / MISSED / dry run)."""
    rows: list[dict[str, str]] = []

    def add(check: str, value: str, target: str = "", ok: Optional[bool] = True, failure: bool = False) -> None:
        status = "ok" if ok else ("FAIL" if failure else "MISSED")
        if dry and not failure and target:
            status = "dry run"
        rows.append({"check": check, "value": value, "target": target, "status": status})

    for name, result in results.items():
        if result.get("timed_out") or result.get("returncode") not in (0, None) and name != "cuda_tests":
            why = "timed out" if result.get("timed_out") else f"exit {result['returncode']}, see {result['log']}"
            add(name, why, ok=False, failure=True)
            continue
        if name == "cuda_tests":
            counts = result.get("tests", {})
            ran = counts.get("tests", 0) - counts.get("skipped", 0)
            bad = counts.get("failures", 0) + counts.get("errors", 0)
            good = result["returncode"] == 0 and bad == 0 and (dry or (ran > 0 and counts.get("skipped", 0) == 0))
            add("CUDA tests (pytest -m cuda)", f"{ran} passed of {counts.get('tests', 0)}, {bad} failed, "
                f"{counts.get('skipped', 0)} skipped", "all pass, none skipped", good, failure=not good)
            continue
        data = result["data"]
        if name == "crf":
            for size, r in data["sizes"].items():
                add(f"CRF {size}: torch batched ms/img", f"{r['torch_ms_per_image']:.1f} "
                    f"(pydensecrf {r['pydensecrf_ms_per_image']:.0f} on {r['pydensecrf_processes']} processes)",
                    f"<= {TARGETS['crf_ms']:.0f}" if size == "320x320x27" else "",
                    size != "320x320x27" or r["torch_ms_per_image"] <= TARGETS["crf_ms"])
                if r["peak_mib_per_image"] is not None:
                    add(f"CRF {size}: peak GPU MiB/img", f"{r['peak_mib_per_image']:.0f}",
                        f"< {TARGETS['crf_mib_171']:.0f}" if size == "320x320x171" else "",
                        size != "320x320x171" or r["peak_mib_per_image"] < TARGETS["crf_mib_171"])
                equal = r["labels_equal"] >= MIN_LABELS_EQUAL
                add(f"CRF {size}: labels equal to pydensecrf", f"{100 * r['labels_equal']:.3f}% "
                    f"(max abs dQ {r['max_abs_dq']:.1e})", f">= {100 * MIN_LABELS_EQUAL:.0f}%", equal, failure=not equal)
        elif name == "crf_memory":
            h, w, c = data["shape"]
            for mode, r in data["modes"].items():
                default = mode == data["default"]
                add(f"CRF memory, products '{mode}'{' (default)' if default else ''}: {h}x{w}x{c}, call 10 -> 100",
                    f"{r['growth_mib']:+.1f} MiB ({r['mib_per_call']:+.2f}/call), {r['ms_per_call']:.1f} ms/call"
                    f"{'' if r['flat'] else ', LEAKS'}", "flat (the default)" if default else "",
                    r["flat"] or not default, failure=default and not r["flat"])
        elif name == "index_build":
            for key in (k for k in data if k.startswith("model_only_")):
                add(f"index {data['arch']}: model only {key[11:]}", f"{data[key]:.0f} img/s")
            add(f"index: full build ({data['build_precision']}, {data['num_workers']} workers)",
                f"{data['full_build_steady']:.0f} img/s = {100 * data['full_over_model']:.0f}% of model only",
                f">= {100 * TARGETS['build_ratio']:.0f}%", data["full_over_model"] >= TARGETS["build_ratio"])
            add("index: ImageNet-train (1,281,167) at that rate", f"{data['imagenet_train_minutes']:.1f} min",
                f"<= {TARGETS['imagenet_minutes']:.0f} min", data["imagenet_train_minutes"] <= TARGETS["imagenet_minutes"])
            jpeg = data.get("jpeg_decode_vs_pil")
            if jpeg:
                add(f"index: torchvision decode_jpeg on {jpeg['device']} vs PIL (information)",
                    jpeg["error"] if "error" in jpeg else f"{100 * jpeg['equal_fraction']:.2f}% of bytes equal, "
                    f"max difference {jpeg['max_abs_difference']} (GPU decoding would need 100%)")
        elif name == "reco_plus_train":
            peak = f", peak {data['peak_gpu_mib']:.0f} MiB" if data["peak_gpu_mib"] is not None else ""
            add(f"ReCo+ train {data['segmentor']} crop {data['crop']} batch {data['batch']}"
                f"{' AMP' if data['amp'] else ''}", f"{data['iterations_per_s']:.2f} it/s "
                f"(20k iterations: {data['minutes_for_20000']:.0f} min{peak})")
        elif name == "own_images":
            add(f"own images end to end on {data['device']}", f"{data['images']} images in {data['seconds']:.1f} s")
    return rows


def markdown(rows: list[dict[str, str]], header: str) -> str:
    lines = [header, "", "| check | value | target | status |", "|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['value']} | {r['target']} | {r['status']} |" for r in rows]
    return "\n".join(lines) + "\n"


def exit_status(rows: list[dict[str, str]], strict_targets: bool) -> int:
    failing = {"FAIL", "MISSED"} if strict_targets else {"FAIL"}
    return 1 if any(r["status"] in failing for r in rows) else 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check_out", help="output directory (default: gpu_check_out/)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (also GPU_CHECK_DEVICE=cpu)")
    parser.add_argument("--parts", nargs="+", choices=list(TIMEOUTS), default=list(TIMEOUTS))
    parser.add_argument("--strict-targets", action="store_true", help="a missed target also fails the check")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one measuring part
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dry = args.dry_run or os.environ.get("GPU_CHECK_DEVICE") == "cpu"
    if args.part:
        sys.path.insert(0, str(REPO))
        from benchmarks.gpu_check_steps import STEPS

        Path(args.json).write_text(json.dumps(STEPS[args.part](dry), indent=2) + "\n")
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timeouts = TIMEOUTS_DRY if dry else TIMEOUTS
    deadline = time.perf_counter() + (sum(TIMEOUTS_DRY.values()) if dry else BUDGET_S)
    results: dict[str, dict[str, Any]] = {}
    for name in args.parts:
        left = deadline - time.perf_counter()
        if left < 5:
            results[name] = {"part": name, "returncode": None, "timed_out": True, "log": "", "seconds": 0.0}
            continue
        print(f"[gpu_check] {name} (limit {min(timeouts[name], left):.0f} s) ...", flush=True)
        results[name] = run_part(name, out, dry, min(timeouts[name], left))
        print(f"[gpu_check] {name}: exit {results[name]['returncode']} in {results[name]['seconds']:.0f} s", flush=True)
    rows = table_rows(results, dry)
    header = _header(dry, sum(r["seconds"] for r in results.values()))
    text = markdown(rows, header)
    print("\n" + text)
    (out / "gpu_check.md").write_text(text)
    (out / "gpu_check.json").write_text(json.dumps({"dry_run": dry, "targets": TARGETS, "parts": results,
                                                     "table": rows}, indent=2, default=str) + "\n")
    return exit_status(rows, args.strict_targets)


def _header(dry: bool, seconds: float) -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    mode = "DRY RUN on the CPU (tiny sizes; the values mean nothing)" if dry else gpu
    return (f"## gpu_check: {mode}\n\ntorch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"{os.cpu_count()} CPU cores, {seconds:.0f} s in all")


if __name__ == "__main__":
    sys.exit(main())
