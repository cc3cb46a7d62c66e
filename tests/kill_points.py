"""Kill a run at every commit point: SIGKILL right after its N-th rename, for every N.

`kill_at_every_rename(spec)` runs `python tests/kill_points.py SPEC.json` once. That process imports the
entry module once, then, for each N, resets the folders named in the spec, forks a child that runs the
command with os.replace / os.rename (and the folder swap) wrapped to SIGKILL itself right after the
N-th one, snapshots the folders, and forks a second child that runs the command again uninterrupted and
snapshots them again. N = 0 counts the renames of one uninterrupted run. Forking after the imports keeps
each run at the cost of the work itself (no interpreter start, no torch import); the parent never runs a
torch operation, so the children's thread pools start fresh.

Spec (JSON): {"module": "main_reco", "argv": [...], "reset": [[src, dst], ...] (dst replaced by a copy of
src, or removed when src is null), "snapshot": [folder, ...], "ignore": [file name pattern, ...], "preload":
[module, ...], "warm_up": bool, "points": [N, ...] (default every N; a negative N counts from the last
rename), "values": bool (snapshot.values), "volatile_keys": [key, ...] (with values: dropped from each
record of a .jsonl file), "then": [argv, ...] (the runs after the kill, in order; default the same argv once)}. Result:
the count, and per N the snapshots {relative path: sha256} after the kill and after each later run
("after"; "after_rerun" is the last one's).

A new writer gets the same test by adding its command to a test's list (tests/test_kill_points.py).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import signal
from fnmatch import fnmatch
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path, ignore: list[str], values: bool = False,
             volatile_keys: tuple[str, ...] = ()) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` ({} if it is absent). `values`: a .pkl or .pt
    file is known by the values it holds, a .meta.json sidecar without its pickle hash (torch.save
    writes a random serialization id, so equal values need not be equal bytes), and a .jsonl file by its
    records without the `volatile_keys` (values that hold times)."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): _digest(p, values, volatile_keys)
            for p in sorted(folder.rglob("*")) if p.is_file() and not any(fnmatch(p.name, i) for i in ignore)}


def _digest(path: Path, values: bool, volatile_keys: tuple[str, ...] = ()) -> str:
    hasher = hashlib.sha256()
    if values and path.suffix == ".jsonl":
        for line in path.read_text().splitlines():
            record = json.loads(line)
            for key in volatile_keys:
                record.pop(key, None)
            hasher.update(json.dumps(record, sort_keys=True).encode() + b"\n")
    elif values and path.suffix in (".pkl", ".pt"):
        import torch
        from utils.io import safe_load_pickle

        _hash_value(torch.load(path, weights_only=True) if path.suffix == ".pt" else safe_load_pickle(path), hasher)
    elif values and path.name.endswith(".meta.json"):
        record = json.loads(path.read_text())
        record.pop("pickle_sha256", None)
        hasher.update(json.dumps(record, sort_keys=True).encode())
    else:
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


def _hash_value(value: object, hasher) -> None:
    import numpy as np
    import torch

    if isinstance(value, dict):
        for key in sorted(value, key=repr):
            hasher.update(repr(key).encode())
            _hash_value(value[key], hasher)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _hash_value(item, hasher)
    elif isinstance(value, (torch.Tensor, np.ndarray)):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        hasher.update(f"{array.dtype}{array.shape}".encode() + np.ascontiguousarray(array).tobytes())
    else:
        hasher.update(repr(value).encode())


def _snapshots(folders: list[Path], ignore: list[str], values: bool,
               volatile_keys: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """The snapshots, taken in a forked child when values are read (the parent runs no torch code)."""
    if not values:
        return [snapshot(f, ignore) for f in folders]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        with os.fdopen(write, "w") as out:
            json.dump([snapshot(f, ignore, True, volatile_keys) for f in folders], out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as source:
        data = source.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _child(module: object, argv: list[str], kill_after: int, count_file: Path) -> None:
    count = [0]

    def wrap(function):
        def wrapped(*args, **kwargs):
            result = function(*args, **kwargs)
            if result is not False:  # exchange_paths answers False when it did nothing
                count[0] += 1
                if count[0] == kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapped

    import utils.folder_swap as folder_swap
    os.replace, os.rename = wrap(os.replace), wrap(os.rename)
    folder_swap.exchange_paths = wrap(folder_swap.exchange_paths)
    try:
        code = module.main(argv)
    except SystemExit as e:
        code = e.code
    count_file.write_text(str(count[0]))
    os._exit(int(code or 0))


def _run(module: object, argv: list[str], kill_after: int, count_file: Path) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            _child(module, argv, kill_after, count_file)
        finally:
            os._exit(70)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _reset(pairs: list[list]) -> None:
    for src, dst in pairs:
        dst = Path(dst)
        if dst.exists():
            shutil.rmtree(dst)
        if src is not None:
            shutil.copytree(src, dst)


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    sys.path.insert(0, str(REPO))
    for name in spec.get("preload", []):  # heavy imports once, in the parent (no torch op runs here)
        importlib.import_module(name)
    module = importlib.import_module(spec["module"])
    count_file = Path(spec_path).with_suffix(".count")
    ignore, values, volatile = spec.get("ignore", []), bool(spec.get("values")), tuple(spec.get("volatile_keys", ()))
    folders = [Path(f) for f in spec["snapshot"]]
    _reset(spec.get("reset", []))
    if spec.get("warm_up"):  # one run first, so that the counted runs find the caches it fills
        _run(module, spec["argv"], 0, count_file)
        _reset(spec.get("reset", []))
    code = _run(module, spec["argv"], 0, count_file)
    total = int(count_file.read_text())
    results = {"count": total, "uninterrupted_rc": code,
               "uninterrupted": _snapshots(folders, ignore, values, volatile), "points": {}}
    points = spec.get("points") or range(1, total + 1)
    for n in sorted({p if p > 0 else total + 1 + p for p in points if 0 < (p if p > 0 else total + 1 + p) <= total}):
        _reset(spec.get("reset", []))
        killed = _run(module, spec["argv"], n, count_file)
        point = {"killed_rc": killed, "after_kill": _snapshots(folders, ignore, values, volatile), "after": []}
        for argv in spec.get("then") or [spec["argv"]]:
            rc = _run(module, argv, -1, count_file)
            point["after"].append({"rc": rc, "files": _snapshots(folders, ignore, values, volatile)})
        point.update(rerun_rc=point["after"][-1]["rc"], after_rerun=point["after"][-1]["files"])
        results["points"][str(n)] = point
    Path(spec_path).with_suffix(".result.json").write_text(json.dumps(results))


def every_n() -> bool:
    """RECO_KILL_EVERY_N=1: every test kills at every N, whatever points it names (minutes per test; the
    named points are a spread that covers each kind of state a kill leaves)."""
    return os.environ.get("RECO_KILL_EVERY_N", "") not in ("", "0")


def kill_at_every_rename(spec: dict, work: Path, timeout: int = 600) -> dict:
    """Run the spec in a fresh process (see the module's docstring) and return its result."""
    if every_n():
        spec, timeout = {**spec, "points": None}, max(timeout, 3600)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "kill_spec.json"
    path.write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + str(REPO / "tests"))
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(path)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"kill-point runner failed:\n{done.stderr[-4000:]}")
    return json.loads(path.with_suffix(".result.json").read_text())


if __name__ == "__main__":
    main(sys.argv[1])
