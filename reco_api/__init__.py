"""Python API of ReCo: segment images with any class names from a notebook or a script.

    from reco_api import ReCo
    model = ReCo.from_config("configs/reco_custom.yaml")
    result = model.segment("photo.jpg", ["red panda", "bamboo", "snow"])

`python -m reco_api.demo --config CFG` serves the same model as a local web page. With no weights at all,
`demo_model("reco_demo")` (after `python main_reco.py --demo`) and `python -m reco_api.demo --demo` give the
demo world's known answers.

The package is ReCo's library: everything that turns a config into references and predictions
(settings.py, models.py, references.py, predictor.py, ...), used by this API and by the command line's
stages in entry/, which it never imports (docs/DESIGN.md).
"""
from datasets.images import MAX_IMAGE_PIXELS, MAX_INFERENCE_PIXELS, ImageTooLargeError, ImageTooThinError
from reco_api.class_names import check_categories
from reco_api.demo_world import demo_model
from reco_api.model import ReCo
from reco_api.result import Segmentation

__all__ = ["ReCo", "Segmentation", "check_categories", "demo_model", "ImageTooLargeError", "ImageTooThinError",
           "MAX_IMAGE_PIXELS",
           "MAX_INFERENCE_PIXELS"]
