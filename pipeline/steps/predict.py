"""predict: the top-5 classes of images, with a registered (or any MLflow) model.

Example: dha predict --model models:/dha-mobilenet-digits-onnx@champion photo.png images/
Folders are searched for image files (not recursively into hidden folders). Runs on the CPU
for ONNX models; a TensorRT model needs the GPU kind it was built on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dha_train.data import IMAGE_EXTENSIONS
from dha_train.errors import UserError
from export.inference import format_predictions, load_classifier
from pipeline.runs import default_tracking_uri

__all__ = ["add_arguments", "run", "image_paths"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="model URI, e.g. models:/<name>@champion or models:/<name>/<version>",
    )
    parser.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("images", nargs="+", help="image files or folders of images")


def image_paths(items: list[str]) -> list[Path]:
    """Files as given; folders expanded to their image files, sorted."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.parts)
            )
            if not found:
                raise UserError(
                    f"no image files in folder {item!r} ({', '.join(IMAGE_EXTENSIONS)})"
                )
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"no such image file or folder: {item!r}")
    return paths


def run(args: argparse.Namespace) -> None:
    import mlflow

    mlflow.set_tracking_uri(default_tracking_uri())
    paths = image_paths(args.images)
    classifier = load_classifier(args.model)
    print(format_predictions(paths, classifier.topk(paths, k=args.top)), flush=True)
