"""A self-contained world for `python main_reco.py --demo` and the tests: colour-coded scenes and
ImageNet-like images (world.py), and hand-made colour-coded CLIP/DenseCLIP/encoder models
(colour_models.py) whose right answers are known, so the whole pipeline can be checked offline."""
