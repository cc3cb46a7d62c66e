"""Clients for the web demo's load test (tests/test_web_demo.py), in a process of their own so that the
server's memory is measured alone:

    python tests/web_load_driver.py URL IMAGE CLASSES N_REQUESTS[,N_REQUESTS...] N_CLIENTS DOWNLOADS

Per phase, N_CLIENTS threads, each with its own gradio_client.Client, send N_REQUESTS requests in all (the
same image and classes, so every answer is the same) and download each answer's overlay. After each phase
it prints one JSON line (the number of requests, the failures: exception text or a wrong overlay, and the
distinct overlay digests) and, before the next phase, waits for a line on stdin (the test measures then).
"""
from __future__ import annotations

import hashlib
import json
import sys
import threading
from pathlib import Path


def main(argv: list[str]) -> int:
    from gradio_client import Client

    url, image, classes, phases, n_clients, downloads = argv
    n_clients = int(n_clients)
    lock = threading.Lock()
    clients = [Client(url, verbose=False, download_files=str(Path(downloads) / f"client{i}")) for i in range(n_clients)]
    for phase, n_requests in enumerate(int(n) for n in phases.split(",")):
        if phase:
            sys.stdin.readline()
        failures: list[str] = []
        digests: set[str] = set()
        counter = iter(range(n_requests))
        threads = [threading.Thread(target=client_loop, args=(client, image, classes, counter, lock, failures, digests))
                   for client in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(json.dumps({"requests": n_requests, "failures": failures, "overlays": sorted(digests)}), flush=True)
    return 0


def client_loop(client, image, classes, counter, lock, failures, digests) -> None:
    """Send requests until `counter` runs out; record failures and the digests of the overlays."""
    from gradio_client import handle_file

    while True:
        with lock:
            if next(counter, None) is None:
                return
        try:
            overlay, legend, fractions = client.predict(handle_file(image), classes, True, api_name="/segment")
            data = Path(overlay).read_bytes()
            if not data.startswith(b"\x89PNG") or not fractions.get("confidences"):
                raise ValueError(f"incomplete answer: {len(data)} bytes, {fractions}")
            with lock:
                digests.add(hashlib.sha256(data).hexdigest())
            for path in (overlay, legend):  # the client keeps its downloads; the test is about the server
                Path(path).unlink()
        except Exception as error:  # every failure is counted and reported, none stops the load
            with lock:
                failures.append(f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
