"""The demo world through the Python API and from a script outside the repository: the known answer
with no weights and no network."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.registry import CLIP_ARCH, unregister_colour_models
from demo.world import OWN_CLASSES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo_api(demo_world):
    out, _ = demo_world
    yield out
    unregister_colour_models()  # the architectures exist only while a test uses them


def _expected(out: Path, stem: str) -> np.ndarray:
    """The own photo's truth, from the mask the demo's own-images run wrote (accuracy >= 0.9 there)."""
    return np.asarray(Image.open(out / "own_images" / "masks" / f"{stem}.png"))


def test_demo_model_gives_the_known_answer(demo_api):
    from reco_api import demo_model
    from reco_api.demo_world import DEMO_CLASSES, demo_photo

    model = demo_model(demo_api)
    photo = demo_photo(demo_api)
    result = model.segment(photo, DEMO_CLASSES)
    assert result.labels.shape == _expected(demo_api, photo.stem).shape
    assert float((result.labels == _expected(demo_api, photo.stem)).mean()) > 0.95
    assert set(result.fractions) == set(OWN_CLASSES) and max(result.fractions.values()) < 0.9  # not one class


def test_demo_model_without_a_world_says_how_to_make_one(tmp_path):
    from reco_api import demo_model

    with pytest.raises(FileNotFoundError, match="python main_reco.py --demo --out"):
        demo_model(tmp_path / "nothing")


def test_the_readme_example_runs_from_outside_the_repository(demo_api, tmp_path):
    """As the README says: PYTHONPATH names the repository, the script lives and runs anywhere."""
    script = tmp_path / "elsewhere" / "segment.py"
    script.parent.mkdir()
    script.write_text(textwrap.dedent(f"""
        import json
        from reco_api import demo_model
        model = demo_model({str(demo_api)!r})
        result = model.segment({str(demo_api / "world" / "photos" / "scene0.jpg")!r}, "road, building, vegetation, sky, car")
        print(json.dumps(result.fractions))
    """))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(script)], cwd=script.parent, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    fractions = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(fractions) == set(OWN_CLASSES) and abs(sum(fractions.values()) - 1) < 1e-6


def test_web_demo_serves_the_demo_world(demo_api):
    from reco_api import demo as web

    args = web.parse_args(["--demo", "--out", str(demo_api)])
    assert args.demo and args.config is None
    with pytest.raises(SystemExit):
        web.parse_args(["--demo", "--config", "x.yaml"])  # one or the other
    model = web.demo_model(args.out)
    assert model.config.clip_arch == CLIP_ARCH
