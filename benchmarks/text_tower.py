"""Time ReCo's prompt ensemble through a real-size CLIP text tower: full 77-token context vs truncated.

    python benchmarks/text_tower.py                         # RN50x16's text tower, 3 names (255 prompts)
    python benchmarks/text_tower.py --arch ViT-L/14@336px --names cat dog "traffic light" sky --repeats 3

The text tower of the registered architecture is built at random weights (the image tower is replaced by
a tiny one: it plays no part). Both paths run `reco.text.text_embeddings` on the same prompts (OpenAI's
BPE tokenizer, ReCo's 85 templates); the baseline with the model's own encode_text, ours with
networks.text_tower.encode_text_truncated. Prints seconds (best of the repeats), the ratio, the number
of positions used, and the largest difference of the embeddings.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from networks.clip_registry import get_clip  # noqa: E402
from networks.text_tower import encode_text_truncated, used_length  # noqa: E402
from reco.prompt_templates import PROMPT_TEMPLATES  # noqa: E402
from reco.text import text_embeddings  # noqa: E402


def text_tower_clip(arch: str) -> CLIP:
    """The registered OpenAI-style CLIP's real text tower at random weights, with a tiny image tower."""
    spec = get_clip(arch)
    config = open_clip.get_model_config(spec.open_clip_name)
    if config is None or config.get("custom_text"):
        raise SystemExit(f"{arch}: only OpenAI-style CLIPs (open_clip's CLIP class) are timed here")
    config.pop("quick_gelu", None)
    config["vision_cfg"] = dict(image_size=32, layers=1, width=64, patch_size=16)
    return CLIP(**config, quick_gelu=True).eval()


def best_time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="RN50x16", help="a registered OpenAI-style CLIP (default RN50x16)")
    p.add_argument("--names", nargs="+", default=["cat", "traffic light", "sky"], help="class names")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=512, help="prompts per forward (text_embeddings' default)")
    args = p.parse_args()

    torch.manual_seed(0)
    model = text_tower_clip(args.arch)
    tokenizer = open_clip.get_tokenizer("RN50")  # OpenAI's BPE, 77 tokens
    prompts = [t.format(n) for n in args.names for t in PROMPT_TEMPLATES]
    used = used_length(tokenizer(prompts), "argmax", None)
    print(f"{args.arch} text tower (random weights), {len(prompts)} prompts of {len(args.names)} names, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()} on {os.cpu_count()} cores")

    def run(encode):
        return lambda: text_embeddings(model, tokenizer, args.names, batch_size=args.batch_size, encode=encode)

    encode_text_truncated(model, tokenizer(prompts[:2]))  # warm-up (allocator, kernels)
    full_s, full = best_time(run(lambda m, tokens: m.encode_text(tokens)), args.repeats)
    ours_s, ours = best_time(run(encode_text_truncated), args.repeats)
    print(f"full context ({model.context_length} positions): {full_s:8.2f} s")
    print(f"truncated    ({used} positions at most):  {ours_s:8.2f} s")
    print(f"ratio full / truncated: {full_s / ours_s:.1f}x")
    print(f"largest difference of the (unit) embeddings: {float((full - ours).abs().max()):.2e}")


if __name__ == "__main__":
    main()
