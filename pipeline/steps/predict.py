"""predict: the top-5 classes of images, with a registered (or any MLflow) model.

Example: dha predict --model models:/dha-mobilenet-digits-onnx@champion photo.png images/
Folders are searched for image files (not recursively into hidden folders); a file that
cannot be decoded is left out and reported, the others are predicted. Runs on the CPU for
ONNX models; a TensorRT model needs the GPU kind it was built on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dha_train.data import IMAGE_EXTENSIONS, unreadable_reason
from dha_train.errors import ConfigError, UserError
from export.inference import format_predictions, load_classifier
from pipeline.model_uri import check_model_uri

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
    """Files as given; folders expanded to their image files (hidden folders below left out)."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
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
    if args.top < 1:
        raise ConfigError(f"--top {args.top}: give the number of classes to show per image (>= 1)")
    paths = image_paths(args.images)
    bad = {p: why for p in paths if (why := unreadable_reason(p)) is not None}
    good = [p for p in paths if p not in bad]
    if not good:
        first, why = next(iter(bad.items()))
        raise UserError(f"no readable image among the {len(paths)} given ({first}: {why})")
    classifier = load_classifier(check_model_uri(args.model))
    print(format_predictions(good, classifier.topk(good, k=args.top)), flush=True)
    if bad:
        first, why = next(iter(bad.items()))
        raise UserError(
            f"{len(bad)} of {len(paths)} images could not be read and were left out "
            f"(first: {first}: {why}); the others were predicted above"
        )
