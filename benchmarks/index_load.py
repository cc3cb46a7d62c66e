"""Loading the ImageNet index: the authors' published pickle format vs our memory-mapped format.

Writes a synthetic index of --n rows x --dim (default 1,281,167 x 768, as ImageNet-1k train with
ViT-L/14@336px) in both formats, then times, each in a fresh subprocess (peak RSS measured there):
  * pickle.load of the published format + stacking the rows (what the original does),
  * utils.io.safe_load_pickle of it (the generic safe loader),
  * image_index.published.convert_published_pickle (our one-time streaming conversion),
  * image_index.storage.load_index (memmap open) + first access, and a full read of the matrix,
and top-k retrieval (reco.retrieval.retrieve_top_k) of --queries random queries.
Files are evicted from the page cache (posix_fadvise) before each load, so loads are cold.

    python benchmarks/index_load.py                 # full size: ~2 GB npy + ~4.3 GB pickle, ~10 min
    python benchmarks/index_load.py --n 200000      # scaled down
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import pickletools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PICKLE_BYTES_PER_ROW = 3400  # measured: 3.38 KB per 768-float32 entry (4.3 GB / 1.28 M in the original)


def rows_block(start: int, stop: int, dim: int) -> np.ndarray:
    """Deterministic unit rows [start, stop) in float32 (same values whatever the block boundaries)."""
    out = np.empty((stop - start, dim), np.float32)
    for block in range(start // 4096, -(-stop // 4096)):
        lo, hi = max(start, block * 4096), min(stop, (block + 1) * 4096)
        x = np.random.default_rng(block).standard_normal((4096, dim), dtype=np.float32)
        x = x[lo - block * 4096: hi - block * 4096]
        out[lo - start: hi - start] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def name(i: int) -> str:
    return f"n{i // 1300:08d}_{i}.JPEG"


def names(n: int) -> list[str]:
    return [name(i) for i in range(n)]


def write_ours(directory: Path, n: int, dim: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(directory / "embeddings.npy", mode="w+", dtype=np.float16, shape=(n, dim))
    for s in range(0, n, 65536):
        out[s: s + 65536] = rows_block(s, min(n, s + 65536), dim)
    out.flush()
    del out
    (directory / "filenames.txt").write_text("".join(f"{name}\n" for name in names(n)))
    (directory / "meta.json").write_text(json.dumps({"clip_arch": "ViT-L/14@336px", "split": "train", "dim": dim,
                                                     "count": n, "image_size": 336}))


def _entry_template(dim: int) -> tuple[bytes, bytes, bytes, bytes]:
    """Cut what `pickle.dump` writes for a dict of tensors into (head, first entry, entry template, tail).

    The second entry refers to the already-memoised globals by BINGET, so it can be repeated with
    another key and other data: the file is byte-for-byte what pickle would write (unframed).
    """
    probe = {"A" * 12: torch.full((dim,), 0.1), "B" * 12: torch.full((dim,), 0.2)}  # no zero bytes
    data = pickle.dumps(probe, protocol=4)
    if data[2] == 0x95:  # strip the single FRAME header (framing is optional for the reader)
        data = data[:2] + data[11:]
    ops = list(pickletools.genops(data))
    key2 = next(pos for op, arg, pos in ops if arg == "B" * 12)
    key1 = next(pos for op, arg, pos in ops if arg == "A" * 12)
    setitems = next(pos for op, arg, pos in ops if op.name == "SETITEMS")
    return data[:key1], data[key1:key2], data[key2:setitems], data[setitems:]


def write_published(path: Path, n: int, dim: int) -> None:
    head, first, template, tail = _entry_template(dim)
    placeholders = [(b"\x8c\x0c" + b"A" * 12, np.full(dim, 0.1, np.float32).tobytes()),
                    (b"\x8c\x0c" + b"B" * 12, np.full(dim, 0.2, np.float32).tobytes())]
    with open(path, "wb") as f:
        f.write(head)
        for s in range(0, n, 1000):  # pickle's dict batches: MARK k v ... SETITEMS per 1000 items
            block = rows_block(s, min(n, s + 1000), dim)
            if s:
                f.write(b"(")
            for i in range(len(block)):
                key = name(s + i).encode()
                entry, (key_placeholder, data_placeholder) = (first, placeholders[0]) if s + i == 0 else \
                    (template, placeholders[1])
                entry = entry.replace(key_placeholder, b"\x8c" + bytes([len(key)]) + key)
                f.write(entry.replace(data_placeholder, block[i].tobytes()))
            f.write(b"u")
        f.write(tail[1:])  # STOP


def evict(path: Path) -> None:
    for f in ([path] if path.is_file() else sorted(path.iterdir())):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across fork/exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 2**20


class AnonPeak:
    """Samples RssAnon (anonymous resident memory, i.e. not file pages of memory maps) every 20 ms."""

    def __init__(self) -> None:
        import threading

        self.peak, self.stop = 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            with open("/proc/self/status") as f:
                self.peak = max(self.peak, next(int(line.split()[1]) for line in f if line.startswith("RssAnon")))
            self.stop.wait(0.02)

    def gb(self) -> float:
        self.stop.set()
        self.thread.join()
        return self.peak / 2**20


def child(kind: str, path: str, extra: str) -> None:
    """Runs in a subprocess: one measurement, printed as JSON with the peak RSS."""
    anon = AnonPeak()
    start = time.perf_counter()
    result: dict = {}
    if kind == "baseline":  # the imports every measurement pays for
        from image_index.storage import load_index  # noqa: F401
        from utils.io import safe_load_pickle  # noqa: F401
    elif kind == "pickle":
        with open(path, "rb") as f:
            table = pickle.load(f)
        result["load_s"] = time.perf_counter() - start
        matrix = torch.stack(list(table.values()))  # the original then stacks (and moves to the GPU)
        result["rows"] = int(matrix.shape[0])
    elif kind == "safe_pickle":
        from utils.io import safe_load_pickle

        result["rows"] = len(safe_load_pickle(path))
    elif kind == "convert":
        from image_index.published import convert_published_pickle

        convert_published_pickle(path, extra, "ViT-L/14@336px", "train")
    elif kind == "ours":
        from image_index.storage import load_index

        index = load_index(path, expected_dim=768)
        result["first_access_sum"] = float(np.asarray(index.embeddings[len(index) // 2], np.float32).sum())
        result["load_s"] = time.perf_counter() - start
        t = time.perf_counter()
        result["full_read_sum"] = float(np.asarray(index.embeddings[::4096], np.float32).sum())
        total = 0.0
        for s in range(0, len(index), 131072):
            total += float(np.asarray(index.embeddings[s: s + 131072]).sum(dtype=np.float32))
        result["full_read_s"] = time.perf_counter() - t
        result["rows"] = len(index)
    result["total_s"] = time.perf_counter() - start
    result["peak_rss_gb"] = peak_rss_gb()
    result["peak_anon_gb"] = anon.gb()
    print("RESULT " + json.dumps(result), flush=True)


def measure(kind: str, path: Path, extra: str = "") -> dict:
    evict(path)
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(path), extra], capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} failed: {out.stderr[-2000:]}")
    return json.loads(lines[-1][7:])


def retrieval(directory: Path, n_queries: int, k: int) -> dict:
    from image_index.storage import load_index
    from reco.retrieval import retrieve_top_k

    index = load_index(directory)
    float(np.asarray(index.embeddings[::256]).sum())  # warm the page cache once
    for s in range(0, len(index), 131072):
        np.asarray(index.embeddings[s: s + 131072]).sum()
    queries = torch.randn(n_queries, index.dim, generator=torch.Generator().manual_seed(0))
    queries = torch.nn.functional.normalize(queries, dim=-1)
    times = {}
    results = {}
    for method in ("auto", "fp32"):
        retrieve_top_k(queries[:2], index.embeddings, k, method=method)
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            results[method] = retrieve_top_k(queries, index.embeddings, k, method=method)
            best = min(best, time.perf_counter() - t)
        times[method] = best
    a, b = results["auto"], results["fp32"]
    # the two methods agree up to float32 rounding ties: same sets, order equal except swapped near-ties
    times["same_sets"] = all(set(x) == set(y) for x, y in zip(a.tolist(), b.tolist()))
    times["same_order"] = int((a == b).all(dim=1).sum())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_281_167)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=171)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--workdir", default=None, help="where to write the files (default: a temporary dir)")
    parser.add_argument("--skip-safe-pickle", action="store_true", help="skip the slow generic safe loader")
    parser.add_argument("--skip-pickle", action="store_true", help="skip pickle.load of the published format")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for retrieval (default: torch's)")
    parser.add_argument("--only-retrieval", action="store_true", help="with --reuse: time the retrieval only")
    parser.add_argument("--reuse", action="store_true", help="reuse the files of an earlier run in --workdir")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="index_load_"))
    work.mkdir(parents=True, exist_ok=True)
    n = args.n
    need = n * (args.dim * 2 * 2 + PICKLE_BYTES_PER_ROW * args.dim / 768) * 1.05  # npy, converted npy, pickle
    free = shutil.disk_usage(work).free
    if need > free:
        n = int(n * free / need * 0.9)
        print(f"only {free / 2**30:.1f} GiB free in {work}: scaled down to --n {n}")
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    pickle_gb = n * PICKLE_BYTES_PER_ROW * args.dim / 768 / 2**30
    print(f"rows {n} x {args.dim}; pickle ~{pickle_gb:.2f} GiB; RAM available {available / 2**30:.1f} GiB")
    try:
        ours = work / "index" / "ViT_L_14_336px_train"
        pkl = work / "filename_to_ViT_L_14_336px_train_img_embedding.pkl"
        reuse = args.reuse and (ours / "meta.json").is_file() and pkl.is_file() and \
            json.loads((ours / "meta.json").read_text())["count"] == n
        if not reuse:
            t = time.perf_counter()
            write_ours(ours, n, args.dim)
            print(f"wrote our format in {time.perf_counter() - t:.1f} s")
            t = time.perf_counter()
            write_published(pkl, min(n, 2500), args.dim)
            check = pickle.load(open(pkl, "rb"))  # the synthetic file is what pickle.dump would write
            assert list(check) == names(min(n, 2500))
            assert np.array_equal(torch.stack(list(check.values())).numpy(), rows_block(0, min(n, 2500), args.dim))
            del check
            write_published(pkl, n, args.dim)
            print(f"wrote the published format ({pkl.stat().st_size / 2**30:.2f} GiB) in "
                  f"{time.perf_counter() - t:.1f} s")

        if reuse and args.only_retrieval:
            r = retrieval(ours, args.queries, args.k)
            print(f"top-{args.k} retrieval for {args.queries} queries, {torch.get_num_threads()} threads: {r}")
            return
        res = {"baseline": measure("baseline", ours), "ours": measure("ours", ours)}
        base_gb = res["baseline"]["peak_anon_gb"]
        fits = available > 2.6 * pkl.stat().st_size
        if fits and not args.skip_pickle:
            res["pickle"] = measure("pickle", pkl)
            if not args.skip_safe_pickle:
                res["safe_pickle"] = measure("safe_pickle", pkl)
        else:
            print("not enough RAM to pickle.load the published format (~2.5x its size); skipped")
        converted = work / "converted"
        shutil.rmtree(converted, ignore_errors=True)
        res["convert"] = measure("convert", pkl, str(converted))
        res["retrieval"] = retrieval(ours, args.queries, args.k)
        print(json.dumps(res, indent=1))
        o, size = res["ours"], pkl.stat().st_size

        def ram(r: dict) -> str:  # anonymous memory: memory-mapped file pages are not counted
            above = (r["peak_anon_gb"] - base_gb) * 2**30 / size
            return f"peak RSS {r['peak_anon_gb']:.2f} GB = {above:.2f}x the pickle"

        print(f"\n== index load, {n} x {args.dim} (cold page cache; RSS above the imports) ==")
        print(f"ours: memmap open + first access {o['load_s']:.3f} s; full read of the matrix "
              f"{o['full_read_s']:.2f} s")
        if "pickle" in res:
            p = res["pickle"]
            print(f"pickle.load {p['load_s']:.1f} s (+ stack {p['total_s']:.1f} s), {ram(p)} -> ours is "
                  f"{p['load_s'] / o['load_s']:.0f}x faster to load ({p['total_s'] / o['load_s']:.0f}x with the stack)")
        if "safe_pickle" in res:
            print(f"utils.io.safe_load_pickle {res['safe_pickle']['total_s']:.1f} s, {ram(res['safe_pickle'])}")
        c = res["convert"]
        print(f"one-time conversion (convert_published_pickle) {c['total_s']:.1f} s, {ram(c)}")
        r = res["retrieval"]
        print(f"top-{args.k} retrieval for {args.queries} queries: auto {r['auto']:.2f} s, fp32 {r['fp32']:.2f} s "
              f"(same top-{args.k} sets: {r['same_sets']}, same order for {r['same_order']}/{args.queries} queries), "
              f"torch threads {torch.get_num_threads()}")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
