"""Benchmark and ImageNet readers, evaluation transforms, class lists and palettes.

Main entry points:
    datasets.benchmarks.build_benchmark(dataset_name, root, split) -> Dataset of dicts (SPEC 10, 11)
    datasets.benchmarks.collate, datasets.benchmarks.size_grouped_batches
    datasets.metadata.categories / eval_categories / palette / prediction_to_eval / context_categories
"""
from .benchmarks import BenchmarkDataset, UnreadableImageError, build_benchmark, collate, size_grouped_batches
from .metadata import (DATASET_NAMES, categories, context_categories, eval_categories, palette,
                       prediction_to_eval)

__all__ = [
    "DATASET_NAMES", "BenchmarkDataset", "UnreadableImageError", "build_benchmark", "categories",
    "collate", "context_categories", "eval_categories", "palette", "prediction_to_eval", "size_grouped_batches",
]
