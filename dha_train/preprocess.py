"""How an image becomes a model input: the evaluation transform, as a record that travels.

:class:`Preprocess` is the one home of the recipe: the datasets build their evaluation
transform from it (``data.py``), the export step stores it in the model's metadata, and
inference (``load_classifier``, ``dha predict``, the request file of the README) reads it back
and applies the same transform. Steps: RGB; resize the shorter side to ``resize`` px
(bilinear, PIL's antialiased resize, as torchvision's ``Resize`` does on PIL images); centre
crop to ``resolution`` x ``resolution``; pixels / 255 -> float in ``input_range`` [0, 1].
``mean``/``std`` record the per-channel normalisation, which the exported model applies
itself (clients send [0, 1], never normalised values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image
from torch import Tensor

from dha_train.errors import ConfigError

__all__ = ["Preprocess", "PREPROCESS_SCHEMA_VERSION"]

PREPROCESS_SCHEMA_VERSION = 1
_INTERPOLATIONS = ("bilinear",)


@dataclass(frozen=True)
class Preprocess:
    """The evaluation transform of a dataset at one resolution (frozen, JSON round-trip)."""

    resolution: int  # side of the square model input (the centre crop), px
    resize: int  # the shorter side is resized to this before the crop, px
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] | None = None  # normalisation inside the model
    std: tuple[float, float, float] | None = None
    input_range: tuple[float, float] = (0.0, 1.0)  # what the model takes: pixels / 255

    def __post_init__(self) -> None:
        if self.resolution < 1 or self.resize < self.resolution:
            raise ConfigError(
                f"preprocess resize {self.resize} / crop {self.resolution}: expected "
                "1 <= resolution <= resize (the crop is taken from the resized image)"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise ConfigError(
                f"preprocess interpolation {self.interpolation!r}: choose one of "
                f"{', '.join(_INTERPOLATIONS)}"
            )

    @classmethod
    def centre_crop(
        cls,
        resolution: int,
        *,
        crop_fraction: float = 1.0,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> Preprocess:
        """Resize the shorter side to ``resolution / crop_fraction``, crop the centre."""
        return cls(resolution, round(resolution / crop_fraction), mean=mean, std=std)

    def transform(self) -> Callable[[Image.Image], Tensor]:
        """PIL image -> uint8 ``(3, R, R)`` tensor (what the evaluation splits yield)."""
        from torchvision import transforms

        return transforms.Compose(
            [
                transforms.Lambda(_rgb),
                transforms.Resize(self.resize, interpolation=_mode(self.interpolation)),
                transforms.CenterCrop(self.resolution),
                transforms.PILToTensor(),
            ]
        )

    def unit_float(self, image: Image.Image) -> Tensor:
        """PIL image -> float32 ``(3, R, R)`` in [0, 1], exactly as evaluation feeds it."""
        return self.transform()(image).float().div_(255.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict with ``schema_version``."""
        return {"schema_version": PREPROCESS_SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict` (ConfigError for another schema or unknown fields)."""
        data = dict(data)
        version = data.pop("schema_version", None)
        if version != PREPROCESS_SCHEMA_VERSION:
            raise ConfigError(
                f"preprocess record has schema_version {version!r}; this code reads "
                f"{PREPROCESS_SCHEMA_VERSION}: re-export the model with this version"
            )
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(data) - known):
            raise ConfigError(
                f"preprocess record has unknown fields {unknown}; known: {sorted(known)}"
            )
        for key in ("mean", "std", "input_range"):
            if data.get(key) is not None:
                data[key] = tuple(float(v) for v in data[key])
        return cls(**data)


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _mode(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    return {"bilinear": InterpolationMode.BILINEAR}[name]
