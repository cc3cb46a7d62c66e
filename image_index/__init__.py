"""The ImageNet retrieval index on disk: storage and loading (storage), the sharded resumable build
(build) and the conversion of the authors' published pickle (published).

This package does file I/O only; models and datasets come in as callables. It imports nothing of the
project but utils/ (tests/test_import_directions.py checks that).
"""
from image_index.build import build_index
from image_index.published import convert_published_pickle, ensure_index
from image_index.storage import (ImageNetIndex, IndexNotFoundError, index_dir, index_tag, load_index,
                                 published_pickle_path)

__all__ = ["ImageNetIndex", "IndexNotFoundError", "build_index", "convert_published_pickle", "ensure_index",
           "index_dir", "index_tag", "load_index", "published_pickle_path"]
