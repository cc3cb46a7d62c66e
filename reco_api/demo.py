"""Local web demo: upload an image, type class names, see the overlay, the legend and the class fractions.

    python -m reco_api.demo --config configs/reco_custom.yaml [--port 7860] [--host 127.0.0.1]

The models are built once, when the server starts, and serve every request; the reference embedding
of a class name is computed on its first request (progress is shown) and reused after that, also
through the on-disk cache. The server listens on 127.0.0.1 (this machine only) unless --host says
otherwise, and sends no usage statistics.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional

# Before gradio is imported: no usage statistics, no version check, no Hugging Face Hub telemetry.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python reco_api/demo.py` works too

import gradio as gr  # noqa: E402

from reco_api.model import ReCo  # noqa: E402
from utils.device import setup_logging  # noqa: E402

# System fonts: the page must not fetch web fonts from the internet.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])


def segment_request(model: ReCo, image_path: Optional[str], classes: str, crf: bool,
                    progress: Any = None) -> tuple[Any, Any, dict[str, float]]:
    """One request: (overlay, legend, {class: pixel fraction}); bad input becomes a message on the page."""
    if not image_path:
        raise gr.Error("Upload an image first.")
    report = (lambda fraction, message: progress(fraction, desc=message)) if progress is not None else None
    try:
        result = model.segment(image_path, classes, crf=crf, progress=report)
    except (ValueError, OSError, TypeError) as e:
        raise gr.Error(str(e)) from None
    return result.overlay, result.legend(), result.fractions


def build_demo(model: ReCo, default_classes: str = "", concurrency: int = 2) -> gr.Blocks:
    """The page. Requests run in up to `concurrency` threads at once (the model is thread-safe)."""

    def run(image_path: Optional[str], classes: str, crf: bool, progress: gr.Progress = gr.Progress()):
        return segment_request(model, image_path, classes, crf, progress)

    with gr.Blocks(title="ReCo: segment with any class names", analytics_enabled=False) as demo:
        gr.Markdown("## ReCo: zero-shot segmentation with any class names\n"
                    "Upload an image, name the classes (comma-separated) and press **Segment**. A class "
                    "seen for the first time is retrieved from ImageNet and co-segmented once; after that "
                    "it is instant.")
        with gr.Row():
            with gr.Column():
                image = gr.File(label="image", file_types=["image"], type="filepath", elem_id="image")
                classes = gr.Textbox(label="class names (comma-separated)", value=default_classes,
                                     placeholder="red panda, bamboo, snow", elem_id="classes")
                crf = gr.Checkbox(label="refine with the dense CRF", value=model.config.crf, elem_id="crf")
                submit = gr.Button("Segment", variant="primary", elem_id="submit")
            with gr.Column():
                overlay = gr.Image(label="overlay", type="pil", format="png", interactive=False, elem_id="overlay")
                legend = gr.Image(label="legend", type="pil", format="png", interactive=False, elem_id="legend")
                fractions = gr.Label(label="fraction of the pixels", elem_id="fractions")
        submit.click(run, [image, classes, crf], [overlay, legend, fractions], concurrency_limit=concurrency)
    return demo


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="ReCo YAML config, e.g. configs/reco_custom.yaml")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", help="override the config's device (auto, cpu, cuda, cuda:1)")
    p.add_argument("--concurrency", type=int, default=2, help="requests served at the same time")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        model = ReCo.from_config(args.config, device=args.device)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo = build_demo(model, ", ".join(model.config.categories or []), args.concurrency)
    demo.launch(server_name=args.host, server_port=args.port, theme=THEME, share=False, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
