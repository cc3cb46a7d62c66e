"""Local web demo: upload an image, type class names, see the overlay, the legend and the class fractions.

    python -m reco_api.demo --config configs/reco_custom.yaml [--port 7860] [--host 127.0.0.1]
        [--max-upload-mb 25] [--max-queue 16] [--concurrency 2] [--keep-files-minutes 60]

The models are built once, when the server starts, and serve every request; the reference embedding
of a class name is computed on its first request (progress is shown) and reused after that, also
through the on-disk cache. The server listens on 127.0.0.1 (this machine only) unless --host says
otherwise, and sends no usage statistics.

Made to be left running: an upload over --max-upload-mb is refused while it streams in; at most
--max-queue requests wait (beyond that the page says the application is busy, try again); every
response gets its own output files (two responses never share or rewrite a file); uploads and outputs
are deleted once older than --keep-files-minutes, and all of them when the server stops (they live in
a folder of their own under GRADIO_TEMP_DIR or the system's temporary folder).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import uuid
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

DEFAULT_MAX_UPLOAD_MB = 25.0  # a 24-megapixel photo as JPEG is 5-15 MB; a larger upload is refused at once
DEFAULT_MAX_QUEUE = 16  # requests waiting beyond those being served; more get "busy, try again"
DEFAULT_KEEP_MINUTES = 60.0  # uploads and outputs older than this are deleted (checked every 10 minutes)


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


def build_demo(model: ReCo, default_classes: str = "", concurrency: int = 2, max_queue: int = DEFAULT_MAX_QUEUE,
               keep_files_s: float = 60 * DEFAULT_KEEP_MINUTES,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> gr.Blocks:
    """The page. Requests run in up to `concurrency` threads at once (the model is thread-safe), at most
    `max_queue` wait. Files (uploads, outputs) live in GRADIO_TEMP_DIR as read now and are deleted once
    older than keep_files_s. max_upload_mb is shown on the page; launch() enforces it."""
    if concurrency < 1 or max_queue < 1 or keep_files_s <= 0:
        raise ValueError(f"concurrency and max_queue must be >= 1 and keep_files_s > 0, got {concurrency}, "
                         f"{max_queue}, {keep_files_s}")
    keep = max(1, round(keep_files_s))
    sweep_every = min(600, keep)
    with gr.Blocks(title="ReCo: segment with any class names", analytics_enabled=False,
                   delete_cache=(sweep_every, keep)) as demo:
        gr.Markdown("## ReCo: zero-shot segmentation with any class names\n"
                    "Upload an image, name the classes (comma-separated) and press **Segment**. A class "
                    "seen for the first time is retrieved from ImageNet and co-segmented once; after that "
                    f"it is instant. Images up to {max_upload_mb:g} MB.")
        with gr.Row():
            with gr.Column():
                image = gr.File(label="image", file_types=["image"], type="filepath", elem_id="image")
                classes = gr.Textbox(label="class names (comma-separated)", value=default_classes,
                                     placeholder="red panda, bamboo, snow", elem_id="classes")
                crf = gr.Checkbox(label="refine with the dense CRF", value=model.config.crf, elem_id="crf")
                submit = gr.Button("Segment", variant="primary", elem_id="submit")
            with gr.Column():
                overlay = gr.Image(label="overlay", type="filepath", format="png", interactive=False,
                                   elem_id="overlay")
                legend = gr.Image(label="legend", type="filepath", format="png", interactive=False, elem_id="legend")
                fractions = gr.Label(label="fraction of the pixels", elem_id="fractions")
        outputs = Path(overlay.GRADIO_CACHE) / "reco_outputs"

        def run(image_path: Optional[str], classes: str, crf: bool, progress: gr.Progress = gr.Progress()):
            shown, key, shares = segment_request(model, image_path, classes, crf, progress)
            return (*response_files(outputs, {"overlay.png": shown, "legend.png": key}), shares)

        submit.click(run, [image, classes, crf], [overlay, legend, fractions], concurrency_limit=concurrency,
                     api_name="segment")
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    return demo


def response_files(folder: Path, images: dict[str, Any]) -> list[str]:
    """Each image (PIL) written to a PNG in a new folder of its own, under a temporary name renamed into
    place: gradio names cached outputs by their content, so identical answers to two requests would share
    (and rewrite) one file while it is being sent; these files are never written twice."""
    own = folder / uuid.uuid4().hex
    own.mkdir(parents=True)
    paths = []
    for name, picture in images.items():
        partial = own / f".{name}.partial"
        picture.save(partial, format="PNG")
        os.replace(partial, own / name)
        paths.append(str(own / name))
    return paths


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860,
           max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, **kwargs: Any) -> Any:
    """Serve the page; an upload over max_upload_mb is refused as it streams in (HTTP 413 and a message)."""
    if max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {max_upload_mb}")
    return demo.launch(server_name=host, server_port=port, theme=THEME, share=False, show_error=True,
                       max_file_size=int(max_upload_mb * 2**20), **kwargs)


def own_files_folder() -> Path:
    """A new folder for this server's uploads and outputs, made GRADIO_TEMP_DIR (inside the one the user
    set, if any), so that stopping the server can delete all of it."""
    folder = Path(tempfile.mkdtemp(prefix="reco_demo_", dir=os.environ.get("GRADIO_TEMP_DIR") or None))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="ReCo YAML config, e.g. configs/reco_custom.yaml")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", help="override the config's device (auto, cpu, cuda, cuda:1)")
    p.add_argument("--concurrency", type=int, default=2, help="requests served at the same time (default 2)")
    p.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                   help=f"requests that may wait; beyond them the page says busy, try again (default {DEFAULT_MAX_QUEUE})")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest upload accepted, in MB (default {DEFAULT_MAX_UPLOAD_MB:g})")
    p.add_argument("--keep-files-minutes", type=float, default=DEFAULT_KEEP_MINUTES,
                   help=f"uploads and outputs older than this are deleted (default {DEFAULT_KEEP_MINUTES:g})")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    for flag, value in (("--concurrency", args.concurrency), ("--max-queue", args.max_queue),
                        ("--max-upload-mb", args.max_upload_mb), ("--keep-files-minutes", args.keep_files_minutes)):
        if not value > 0:
            print(f"error: {flag} must be > 0, got {value}", file=sys.stderr)
            return 2
    try:
        model = ReCo.from_config(args.config, device=args.device)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = own_files_folder()
    try:
        demo = build_demo(model, ", ".join(model.config.categories or []), args.concurrency, args.max_queue,
                          60 * args.keep_files_minutes, args.max_upload_mb)
        launch(demo, args.host, args.port, args.max_upload_mb)  # returns when the server stops (Ctrl-C)
    finally:
        shutil.rmtree(files, ignore_errors=True)  # every upload and output of this server
    return 0


if __name__ == "__main__":
    sys.exit(main())
