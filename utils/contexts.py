"""The paper's context categories and reference aliases: the one place they are defined.

Context elimination co-segments these categories first, in this order, each eliminating the ones before
it (SPEC 7.4). Cityscapes and KITTI-STEP call the tree context "vegetation": an alias makes such a
category reuse the context's reference embedding. The config's `context_categories` and
`reference_aliases` default to these.
"""
from __future__ import annotations

import types
from typing import Mapping

PAPER_CONTEXT_CATEGORIES: tuple[str, ...] = ("tree", "sky", "building", "road", "person")
PAPER_REFERENCE_ALIASES: Mapping[str, str] = types.MappingProxyType({"vegetation": "tree"})
