"""The web demo (python -m reco_api.demo) with the colour-coded models.

The browser test drives the real page in headless Chromium (the Debian package; .ci/run installs it):
it uploads an image, types class names, clicks Segment, and reads back the overlay and the fractions,
which must be the Python API's answer. It skips, saying why, only where Chromium cannot start.
"""
import io
import json
import socket
import threading

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


def launch(model, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = web.build_demo(model)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, theme=web.THEME,
                quiet=True, show_error=True)
    return demo, f"http://127.0.0.1:{port}/"


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


def test_demo_in_a_real_browser(tmp_path, browser, colour_setup, monkeypatch, lookups):
    model = ReCo.from_config(colour_setup, image_short_side=128)  # small: the CRF stays fast
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
