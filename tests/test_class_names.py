"""What a user types is what runs: class names from the command line, the Python API and the web page
follow one set of rules; an --out inside --images and a folder of unreadable images (known answers)."""
import json

import pytest

import main_reco
from entry.reco_own_images import parse_categories
from reco_api import ReCo, check_categories
from reco_api.class_names import check_segmentation_classes
from test_end_to_end import reco_config
from test_own_images import CLASSES, colour_setup, write_scenes  # noqa: F401 (colour_setup is a fixture)
from utils.config import ConfigError


@pytest.mark.parametrize("typed, names", [
    ("cat,grass,sky", ["cat", "grass", "sky"]),
    (" cat , grass ", ["cat", "grass"]),
    ('["cat", "grass"]', ["cat", "grass"]),
    ('["traffic light, red", "road"]', ["traffic light, red", "road"]),
    ("cat\ngrass\n", None),  # a trailing line break leaves an empty name: refused below
    ("red panda, bamboo", ["red panda", "bamboo"]),
])
def test_one_parser_for_strings(typed, names):
    if names is None:
        with pytest.raises(ValueError, match="empty class name"):
            check_categories(typed)
    else:
        assert check_categories(typed) == names
        assert parse_categories(typed, None) == names  # the command line gives the same


@pytest.mark.parametrize("typed, message", [
    ("cat grass sky", 'only one class given (\'cat grass sky\'): segmenting needs at least two, since every pixel '
                      'would be \'cat grass sky\'; if you meant 3 classes, separate them with commas: "cat, grass, sky"'),
    ("sky", "only one class given ('sky')"),
    ('["cat", 3]', "class names must be strings, got 3"),
    ('["cat", "grass"', "start with '[' but are not a JSON list"),
    ("clases.txt", "--categories: file not found:"),
    ("lists/classes", "--categories: file not found:"),
])
def test_command_line_mistakes_are_named(typed, message):
    with pytest.raises(ConfigError) as error:
        parse_categories(typed, None)
    assert message in str(error.value)


def test_a_class_file_and_the_config_list(tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("# my classes\ncat\n\ngrass\n")
    assert parse_categories(str(names), None) == ["cat", "grass"]
    assert parse_categories(None, ["cat ", "grass"]) == ["cat", "grass"]
    with pytest.raises(ConfigError, match="categories: only one class"):
        parse_categories(None, ["cat"])


def test_api_needs_two_classes_to_segment_but_references_take_one():
    assert check_categories("sky") == ["sky"]  # ReCo.references("sky") is fine
    with pytest.raises(ValueError, match="only one class"):
        check_segmentation_classes(["sky"])


def test_one_class_on_the_command_line_stops_before_any_work(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    write_scenes(tmp_path / "photos", sizes=((40, 60),))
    argv = ["--config", str(reco_config(tmp_path)), "--images", str(tmp_path / "photos"),
            "--categories", "cat grass sky", "--out", str(tmp_path / "o")]
    assert main_reco.main(argv) == 2
    assert 'separate them with commas: "cat, grass, sky"' in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_out_inside_images_and_unreadable_folders(tmp_path, colour_setup, capsys):
    photos = tmp_path / "photos"
    write_scenes(photos, sizes=((40, 60), (50, 70)))
    base = ["--config", str(colour_setup), "--categories", ",".join(CLASSES), "--no-crf"]
    for _ in range(2):  # the second run must not segment the first run's masks and overlays
        assert main_reco.main(base + ["--images", str(photos), "--out", str(photos / "out")]) == 0
        summary = json.loads((photos / "out" / "summary.json").read_text())
        assert sorted(summary["images"]) == ["scene0", "sub/scene1"] and summary["skipped"] == []

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.jpg", "b.png"):
        (broken / name).write_bytes(b"not an image")
    capsys.readouterr()
    assert main_reco.main(base + ["--images", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "none of the 2 images could be read" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
