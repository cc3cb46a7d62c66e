"""The text-embedding cache (reco_api/text_cache.py): one file per (CLIP, weights, templates, precision,
name) beside the reference cache; a warm run embeds no text, context names are embedded only when their
references are computed; another process reads the files; another setting misses; a damaged file is a
logged recomputation."""
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main_reco
import networks
import reco_api.text_cache as text_cache
from reco_api.settings import ModelSpec
from reco_api.text_cache import TextEmbeddings
from test_own_images import colour_setup, write_scenes  # noqa: F401 (colour_setup is a fixture)

REPO = Path(__file__).resolve().parents[1]
NAMES = ["cat", "traffic light", "a/b"]  # "a/b": a name that must not become a folder


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return networks.build_clip("tiny-rn-clip", "random")


@pytest.fixture
def embedded_names(monkeypatch):
    """The names each call of the text towers embeds (a spy on reco.text.text_embeddings as used)."""
    calls = []
    original = text_cache.text_embeddings

    def spy(clip_model, tokenizer, names, *args, **kwargs):
        calls.append(list(names))
        return original(clip_model, tokenizer, names, *args, **kwargs)

    monkeypatch.setattr(text_cache, "text_embeddings", spy)
    return calls


def embeddings(root, tiny_clip, spec=ModelSpec("tiny-rn-clip", "random"), **kwargs):
    return TextEmbeddings(spec, "fp32", lambda: tiny_clip, "test", root, **kwargs)


def test_a_cold_run_writes_one_file_per_name_and_another_process_reads_them(tmp_path, tiny_clip, embedded_names):
    cold = embeddings(tmp_path, tiny_clip)
    first = cold(NAMES)
    assert embedded_names == [NAMES]  # in one pass
    files = sorted(cold.directory.glob("*.pt"))
    assert len(files) == len(NAMES) and cold.directory.parent == tmp_path / "text"
    assert all(path == cold.path(torch.load(path, weights_only=True)["name"]) for path in files)
    assert cold(NAMES[::-1]).equal(first.flip(0))  # memoised
    assert len(embedded_names) == 1

    # another process finds every name in the files: its tower is never loaded
    script = (
        "import sys, torch\n"
        "from reco_api.settings import ModelSpec\n"
        "from reco_api.text_cache import TextEmbeddings\n"
        "def load(): raise SystemExit('the text tower was loaded')\n"
        f"cache = TextEmbeddings(ModelSpec('tiny-rn-clip', 'random'), 'fp32', load, 'test', {str(tmp_path)!r})\n"
        f"torch.save(cache({NAMES!r}), {str(tmp_path / 'read.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120)
    assert torch.load(tmp_path / "read.pt", weights_only=True).equal(first)


def test_another_weights_file_template_set_arch_or_precision_misses(tmp_path, tiny_clip, embedded_names):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"0" * 10)
    spec = ModelSpec("tiny-rn-clip", str(weights))
    embeddings(tmp_path, tiny_clip, spec)(["cat"])
    embeddings(tmp_path, tiny_clip, spec)(["cat"])
    assert len(embedded_names) == 1  # the same setting: read from the file
    weights.write_bytes(b"0" * 11)  # the file was replaced by another of the same name
    embeddings(tmp_path, tiny_clip, spec)(["cat"])
    assert len(embedded_names) == 2
    embeddings(tmp_path, tiny_clip, spec, templates=("a photo of a {}.",))(["cat"])
    assert len(embedded_names) == 3
    embeddings(tmp_path, tiny_clip, ModelSpec("tiny-vit-clip", str(weights)))(["cat"])
    assert len(embedded_names) == 4
    TextEmbeddings(spec, "fp16", lambda: tiny_clip, "test", tmp_path)(["cat"])
    assert len(embedded_names) == 5
    weights.unlink()  # weights that cannot be loaded match nothing recorded
    embeddings(tmp_path, tiny_clip, spec)(["cat"])
    assert len(embedded_names) == 6


@pytest.mark.parametrize("damage", ["garbage", "other name", "empty"])
def test_a_damaged_cache_file_is_a_logged_recomputation(tmp_path, tiny_clip, embedded_names, caplog, damage):
    right = embeddings(tmp_path, tiny_clip)(["cat"])
    path = embeddings(tmp_path, tiny_clip).path("cat")
    if damage == "garbage":
        path.write_bytes(b"not a torch file")
    elif damage == "other name":
        torch.save({"name": "dog", "setting": {}, "embedding": torch.zeros(3)}, path)
    else:
        path.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="reco"):
        again = embeddings(tmp_path, tiny_clip)(["cat"])
    assert again.equal(right) and len(embedded_names) == 2
    assert "recomputing the text embedding of 'cat'" in caplog.text and str(path) in caplog.text
    assert torch.load(path, weights_only=True)["embedding"].equal(right[0])  # rewritten whole


def test_a_warm_run_embeds_no_text_and_contexts_only_with_their_references(tmp_path, colour_setup, embedded_names,
                                                                         monkeypatch):
    write_scenes(tmp_path / "photos", sizes=((40, 60),))
    out = tmp_path / "out"
    argv = ["--config", str(colour_setup), "--images", str(tmp_path / "photos"), "--out", str(out), "--no-crf",
            "--categories", "sky,car,fence"]
    assert main_reco.main(argv) == 0
    cold = [name for call in embedded_names for name in call]
    assert "fence" in cold and "tree" in cold  # retrieval and text attention of every reference computed
    text_files = list((tmp_path / "ckpt" / "references" / "text").rglob("*.pt"))
    assert len(text_files) == 2 * len(set(cold))  # the retrieval CLIP's and DenseCLIP's, one file per name

    clips_built = []
    original = networks.build_clip
    monkeypatch.setattr(networks, "build_clip", lambda arch, *a, **k: clips_built.append(arch) or original(arch, *a, **k))
    embedded_names.clear()
    assert main_reco.main(argv) == 0
    assert embedded_names == []  # a warm run embeds no text at all
    assert clips_built == ["tiny-rn-clip"]  # DenseCLIP for inference; the retrieval CLIP is never built
    masks = {p.name: p.read_bytes() for p in (out / "masks").iterdir()}

    # references cached, text cache gone: only the classes' DenseCLIP text (inference), no context, no query
    shutil.rmtree(tmp_path / "ckpt" / "references" / "text")
    assert main_reco.main(argv) == 0
    assert embedded_names == [["sky", "car", "fence"]]
    assert {p.name: p.read_bytes() for p in (out / "masks").iterdir()} == masks
    assert json.loads((out / "summary.json").read_text())["categories"] == ["sky", "car", "fence"]
