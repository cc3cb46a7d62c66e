"""The web demo (python -m reco_api.demo) with the colour-coded models.

The browser test drives the real page in headless Chromium (the Debian package; .ci/run installs it):
it uploads an image, types class names, clicks Segment, and reads back the overlay and the fractions,
which must be the Python API's answer. It skips, saying why, only where Chromium cannot start.
"""
import gc
import io
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from cdp import BrowserError, Chromium, find_chromium  # noqa: E402
from reco_api import ReCo  # noqa: E402
from reco_api import demo as web  # noqa: E402
from synthetic import draw_scene, render  # noqa: E402
from test_own_images import CLASSES, colour_setup  # noqa: E402,F401 (colour_setup is a fixture)


@pytest.fixture
def browser(tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    try:
        chromium = Chromium(binary, tmp_path / "chromium")
    except (BrowserError, OSError) as e:
        pytest.skip(f"Chromium cannot start here: {e}")
    yield chromium
    chromium.close()


@pytest.fixture
def lookups(monkeypatch):
    """Host names the process tries to resolve that are not this machine (telemetry would show here)."""
    seen = []
    resolve = socket.getaddrinfo

    def recording(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in ("localhost", "127.0.0.1", "::1", "0.0.0.0", "None"):
            seen.append(name)
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    return seen


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(model, tmp_path, monkeypatch, max_upload_mb=web.DEFAULT_MAX_UPLOAD_MB, **settings):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = web.build_demo(model, max_upload_mb=max_upload_mb, **settings)
    port = free_port()
    web.launch(demo, "127.0.0.1", port, max_upload_mb, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


def rss_mb():
    """Resident memory of this process (the server's), after giving freed heap back to the system: memory
    kept, not the allocator's free lists (they made single readings jump by +-15 MB)."""
    import ctypes

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def post_upload(url, name, data):
    """POST one file to the page's upload route, as the browser does: (HTTP status, body)."""
    boundary = "reco-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def upload(chromium, path):
    """Choose `path` in the image field (clearing the file chosen before, as a user would)."""
    if chromium.evaluate("!!document.querySelector('#image button[aria-label=Clear]')"):
        chromium.click("#image button[aria-label=Clear]")
    chromium.wait_for("document.querySelector('#image input[type=file]')", timeout=30)
    chromium.set_files("#image input[type=file]", [str(path)])
    chromium.wait_for(f"document.querySelector('#image').innerText.includes({json.dumps(path.stem)})", timeout=30)


def read_fractions(chromium):
    """{class: percentage} as the page's label component shows them."""
    pairs = chromium.evaluate(
        "JSON.stringify([...document.querySelectorAll('#fractions .text')].map(e => "
        "[e.textContent.trim(), e.parentElement.querySelector('.confidence').textContent.trim()]))")
    return {name: float(value.rstrip("%")) for name, value in json.loads(pairs)}


def test_demo_in_a_real_browser(tmp_path, browser, demo_world, monkeypatch, lookups):
    """The demo world served as `python -m reco_api.demo --demo` serves it: the newcomer's known answer."""
    from demo.registry import unregister_colour_models

    model = web.demo_model(demo_world[0], image_short_side=128)  # small: the CRF stays fast
    demo, url = launch(model, tmp_path, monkeypatch)
    try:
        assert demo.server_name == "127.0.0.1" and not demo.analytics_enabled
        image = tmp_path / "scene.png"
        Image.fromarray(render(draw_scene(60, 80, np.random.default_rng(0)))).save(image)
        broken = tmp_path / "broken.png"
        broken.write_bytes(b"this is not an image")

        browser.navigate(url)
        browser.wait_for("document.querySelector('#submit') && document.querySelector('#image input[type=file]')", timeout=60)
        upload(browser, image)
        browser.type_text("#classes textarea", ", ".join(CLASSES))
        browser.click("#submit")
        src = browser.wait_for("document.querySelector('#overlay img')?.src", timeout=60)
        browser.wait_for("document.querySelectorAll('#fractions .confidence').length == 5", timeout=10)
        shown = Image.open(io.BytesIO(browser.fetch_bytes(json.dumps(src))))
        legend = browser.wait_for("document.querySelector('#legend img')?.src", timeout=10)
        fractions = read_fractions(browser)

        expected = model.segment(image, CLASSES)  # the Python API on the same file
        np.testing.assert_array_equal(np.asarray(shown.convert("RGB")), np.asarray(expected.overlay))
        assert sorted(fractions) == sorted(CLASSES)
        for name, percent in fractions.items():
            assert percent == pytest.approx(100 * expected.fractions[name], abs=1), name
        assert fractions["sky"] > 20 and fractions["road"] > 20  # and it is the known answer
        assert Image.open(io.BytesIO(browser.fetch_bytes(json.dumps(legend)))).size[0] > 50

        # Bad input is a message on the page, and the page keeps working.
        upload(browser, broken)
        browser.click("#submit")
        browser.wait_for("document.body.innerText.includes('cannot read image')", timeout=30)
        upload(browser, image)
        browser.type_text("#classes textarea", "sky, sky")
        browser.click("#submit")
        browser.wait_for("document.body.innerText.includes('duplicate class names')", timeout=30)
    finally:
        demo.close()
        unregister_colour_models()
    assert lookups == []  # no telemetry, no version check, no web fonts resolved by the server


def test_request_handler_and_command_line(tmp_path, colour_setup, monkeypatch):
    model = ReCo.from_config(colour_setup, crf=False)
    image = tmp_path / "scene.png"
    Image.fromarray(render(draw_scene(60, 80, np.random.default_rng(0)))).save(image)

    updates = []
    overlay, legend, fractions = web.segment_request(
        model, str(image), "sky, car", False, progress=lambda fraction, desc: updates.append(desc))
    assert overlay.size == (80, 60) and legend.size[0] > 0 and sum(fractions.values()) == pytest.approx(1)
    assert any(desc.startswith("co-segmenting") for desc in updates)  # the page shows these

    for path, classes, message in [(None, "sky", "Upload an image first"), (str(image), " ", "no class names"),
                                   (str(tmp_path), "sky, car", "cannot read image"),
                                   (str(image), "cat grass sky", "separate them with commas")]:
        with pytest.raises(gr.Error, match=message):
            web.segment_request(model, path, classes, False)

    # Two requests at once through the handler: both answered, as one at a time would answer them.
    answers = [None, None]

    def request(i, classes):
        answers[i] = web.segment_request(model, str(image), classes, False)[2]

    threads = [threading.Thread(target=request, args=(0, "road, building, fence")),
               threading.Thread(target=request, args=(1, "fence, sky, car"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers[0] == model.segment(image, "road, building, fence").fractions
    assert answers[1] == model.segment(image, "fence, sky, car").fractions

    # The command line: 127.0.0.1 unless told otherwise; the models are built before serving.
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs))
    assert web.main(["--config", str(colour_setup), "--port", "7999"]) == 0
    assert launched["server_name"] == "127.0.0.1" and launched["server_port"] == 7999 and not launched["share"]
    assert web.main(["--config", str(tmp_path / "missing.yaml")]) == 2


def scene_file(tmp_path, name="scene.png", size=(60, 80)):
    path = tmp_path / name
    Image.fromarray(render(draw_scene(*size, np.random.default_rng(0)))).save(path)
    return path


def start_clients(url, image, phases, n_clients, downloads):
    """The client process (tests/web_load_driver.py): one phase of requests per entry of `phases`; next_phase()
    returns a phase's JSON report and lets the next one start."""
    driver = Path(__file__).resolve().parent / "web_load_driver.py"
    process = subprocess.Popen([sys.executable, str(driver), url, str(image), ", ".join(CLASSES),
                                ",".join(str(n) for n in phases), str(n_clients), str(downloads)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    started = [False]

    def next_phase():
        if started[0]:
            process.stdin.write("\n")
            process.stdin.flush()
        started[0] = True
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"client process failed: {process.communicate(timeout=60)[1][-3000:]}")
        return json.loads(line)

    return process, next_phase


def run_clients(url, image, n_requests, n_clients, downloads):
    process, next_phase = start_clients(url, image, [n_requests], n_clients, downloads)
    try:
        return next_phase()
    finally:
        process.communicate(timeout=60)


@pytest.mark.slow
def test_load_many_clients_complete_answers_and_flat_memory(tmp_path, colour_setup, monkeypatch):
    """LOAD requests from 6 clients at once (identical answers: the case where a shared cached output was
    rewritten while being sent), after WARM to warm up: every answer complete, server memory slope < 0.1 MB
    per request. Memory levels off after about 50 requests (worker threads, caches); a few hundred requests would
take minutes on 2 shared cores, so 50 + 120 (about 30 s on 2 idle cores)."""
    model = ReCo.from_config(colour_setup, image_short_side=64)  # CRF on, small: the CRF stays fast
    demo, url = launch(model, tmp_path, monkeypatch, concurrency=2, max_queue=64)
    process, next_phase = start_clients(url, scene_file(tmp_path), [WARM] + [LOAD // 3] * 3, 6,
                                        tmp_path / "downloads")
    try:
        reports, marks = [next_phase()], [rss_mb()]
        for _ in range(3):
            reports.append(next_phase())
            marks.append(rss_mb())
        slope = float(np.polyfit([LOAD // 3 * i for i in range(4)], marks, 1)[0])  # MB per request
        print(f"server memory after warm-up, every {LOAD // 3} requests: {marks} MB; slope {slope:+.3f} MB/request")
        failures = [f for report in reports for f in report["failures"]]
        assert failures == [], failures[:5]
        assert len({digest for report in reports for digest in report["overlays"]}) == 1  # the same, complete
        assert slope < 0.1, f"server memory grew {slope:.3f} MB per request: {marks}"
    finally:
        process.kill()
        process.communicate()
        demo.close()


WARM, LOAD = 50, 120


def test_oversized_upload_refused_at_once_and_old_files_deleted(tmp_path, colour_setup, monkeypatch):
    """Over --max-upload-mb: HTTP 413 with a message, and the server keeps serving; uploads and outputs
    older than keep_files_s are deleted while it runs."""
    import time

    model = ReCo.from_config(colour_setup, crf=False, image_short_side=64)
    demo, url = launch(model, tmp_path, monkeypatch, max_upload_mb=1, keep_files_s=2)
    try:
        status, body = post_upload(url, "huge.png", b"\0" * (3 * 2**20))
        assert status == 413 and "exceeded maximum allowed size of 1048576 bytes" in body, (status, body)
        image = scene_file(tmp_path)
        status, body = post_upload(url, "scene.png", image.read_bytes())
        assert status == 200 and "scene.png" in body
        answer = run_clients(url, image, 2, 1, tmp_path / "downloads")
        assert answer["failures"] == [] and len(answer["overlays"]) == 1
        files = [p for p in (tmp_path / "gradio").rglob("*.png")]
        assert any(p.name == "overlay.png" for p in files) and any(p.name == "scene.png" for p in files)
        deadline = time.monotonic() + 20
        while any(p.exists() for p in files) and time.monotonic() < deadline:  # swept every 2 s
            time.sleep(0.2)
        assert not any(p.exists() for p in files), [str(p) for p in files if p.exists()]
    finally:
        demo.close()


def test_busy_beyond_the_queue_and_files_deleted_at_stop(tmp_path, colour_setup, monkeypatch):
    """One request served, one waiting (max_queue=1): a third is told the app is busy, at once."""
    from gradio_client import Client, handle_file

    model = ReCo.from_config(colour_setup, crf=False)
    release = threading.Event()
    segment = model.segment
    monkeypatch.setattr(model, "segment", lambda *args, **kwargs: release.wait(60) and segment(*args, **kwargs))
    demo, url = launch(model, tmp_path, monkeypatch, concurrency=1, max_queue=1)
    image = scene_file(tmp_path)
    try:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        first = client.submit(handle_file(str(image)), "sky, car", False, api_name="/segment")
        second = client.submit(handle_file(str(image)), "sky, car", False, api_name="/segment")
        import time

        deadline = time.monotonic() + 30
        while len(demo._queue) < 1 and time.monotonic() < deadline:  # the second waits in the queue
            time.sleep(0.05)
        third = client.submit(handle_file(str(image)), "sky, car", False, api_name="/segment")
        with pytest.raises(Exception) as refused:  # refused while the first still runs (release not set)
            third.result(timeout=30)
        # gradio_client reports the server's "Queue is full" message, or under load sometimes an empty error
        assert not isinstance(refused.value, TimeoutError), "the third request waited instead of being refused"
        assert not str(refused.value) or "Queue is full" in str(refused.value), str(refused.value)
        assert not release.is_set() and not first.done()
        release.set()
        assert first.result(timeout=60)[2]["label"] and second.result(timeout=60)[2]["label"]
        uploads = [p for p in (tmp_path / "gradio").rglob("scene.png")]
        assert uploads
    finally:
        release.set()
        demo.close()
    assert not any(p.exists() for p in uploads), "uploads outlived the server"
