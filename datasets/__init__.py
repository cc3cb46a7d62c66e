"""Benchmark and ImageNet readers, evaluation transforms, class lists and palettes.

Main entry points:
    datasets.registry.BENCHMARKS / register_benchmark(BenchmarkSpec(...)): one entry per dataset_name
    datasets.benchmarks.build_benchmark(dataset_name, root, split) -> Dataset of dicts (SPEC 10, 11)
    datasets.benchmarks.collate, datasets.benchmarks.size_grouped_batches
    datasets.metadata.categories / eval_categories / palette / prediction_to_eval / context_categories
"""
import importlib
from typing import Any

from .metadata import categories, context_categories, eval_categories, palette, prediction_to_eval
from .registry import BENCHMARKS, BenchmarkSpec, benchmark_names, get_benchmark, register_benchmark

# the readers import torch: loaded on first use, so that the registry and the class lists answer at once
# (scripts/reco_ovss.sh lists the benchmarks before anything runs)
_READERS = ("BenchmarkDataset", "UnreadableImageError", "build_benchmark", "collate", "size_grouped_batches")


def __getattr__(name: str) -> Any:
    if name in _READERS:
        return getattr(importlib.import_module(".benchmarks", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BENCHMARKS", "BenchmarkDataset", "BenchmarkSpec", "UnreadableImageError", "benchmark_names",
    "build_benchmark", "categories", "collate", "context_categories", "eval_categories", "get_benchmark",
    "palette", "prediction_to_eval", "register_benchmark", "size_grouped_batches",
]
