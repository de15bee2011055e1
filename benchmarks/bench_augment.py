"""Images/s: batched on-device DA (dha_train.da.augment) vs torchvision RandAugment on PIL.

Both pipelines read the same images through a DataLoader with the same number of workers,
both hand uint8 batches to the training process, and both end with the augmented batch as
float in [0, 1] on the device, what the trainer normalises. Ours: workers only collate;
pairs are drawn from p(tau) and both ops run on the whole uint8 batch on the device, which
returns it as float. Theirs: RandAugment(num_ops=2) per PIL image in the workers, then the
conversion to float on the device (``to_unit_float``, as the trainer does). The two
alternate in rounds and the ratio printed is the median over rounds of the within-round
ratio. Goal: ours >= 5x at 32 px and >= 2x at 224 px.

A third side, ``loader``, times the same DataLoader handing over the same uint8 batches and
only their conversion to float (no augmentation at all): its ``ceiling`` column is the ratio
ours would print if the DA cost nothing (theirs' median time / the loader's), the bound the
benchmark's own rules put on any DA implementation on this machine.

    python benchmarks/bench_augment.py [--device cuda] [--workers 2] [--batch 128]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import RandAugment
from torchvision.transforms import functional as tvf

from dha_train.da.augment import apply_pairs, sample_magnitudes
from dha_train.da.policy import AugmentPolicy
from dha_train.data import load_dataset, to_unit_float
from dha_train.engine.host_memory import retain_freed_memory
from dha_train.timing import compare_interleaved


class Tensors(Dataset):
    """``length`` samples cycling through ``images`` (uint8), handed over as they are."""

    def __init__(self, images: torch.Tensor, length: int) -> None:
        self.images, self.length = images, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i % len(self.images)]


class PilImages(Tensors):
    """The same images as PIL, augmented per sample by RandAugment in the workers."""

    def __init__(self, images: torch.Tensor, length: int) -> None:
        super().__init__(images, length)
        self.pil = [tvf.to_pil_image(img) for img in images]
        self.augment = RandAugment(num_ops=2)

    def __getitem__(self, i: int) -> torch.Tensor:
        return tvf.pil_to_tensor(self.augment(self.pil[i % len(self.pil)]))


def _one_pass(
    loader: DataLoader, per_batch: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> Callable[[], None]:
    """One pass of ``loader``'s uint8 batches through ``per_batch`` (uint8 -> float in [0, 1]);
    its workers are idle before and after."""

    def run() -> None:
        for x in loader:
            per_batch(x.to(device, non_blocking=True))

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--images", type=int, default=1024, help="images per round at 32 px")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    ap.add_argument(
        "--threads", type=int, default=0, help="intra-op threads of this process (0: torch's)"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    retain_freed_memory()
    device = torch.device(args.device)
    policy = AugmentPolicy().to(device)
    gen = torch.Generator(device=device).manual_seed(0)

    def ours(x: torch.Tensor) -> torch.Tensor:
        pairs = policy.sample(x.shape[0], gen)
        mags, signs = sample_magnitudes(x.shape[0], gen)
        return apply_pairs(x, pairs, mags, signs)

    print(
        f"device={device} workers={args.workers} batch={args.batch} "
        f"threads={torch.get_num_threads()} rounds={args.rounds}"
    )
    print(
        f"{'size':>5} {'ours img/s':>12} {'torchvision PIL img/s':>22} {'ratio':>7} "
        f"{'loader img/s':>13} {'ceiling':>8}"
    )
    for size in args.sizes:
        images = torch.stack([x for x, _ in load_dataset("digits", None, size, 0).train])
        images = images[: max(args.batch * 4, 256)].mul(255).round().to(torch.uint8)
        n = args.images if size <= 64 else max(args.batch * 2, args.images // 4)
        kw = dict(
            batch_size=args.batch,
            num_workers=args.workers,
            shuffle=True,
            persistent_workers=args.workers > 0,
            pin_memory=device.type == "cuda",
        )
        ours_loader = DataLoader(Tensors(images, n), **kw)
        theirs_loader = DataLoader(PilImages(images, n), **kw)
        timed = compare_interleaved(
            {
                "ours": _one_pass(ours_loader, ours, device),
                "theirs": _one_pass(theirs_loader, to_unit_float, device),
                "loader": _one_pass(ours_loader, to_unit_float, device),
            },
            baseline="ours",
            device=device,
            rounds=args.rounds,
            iters=1,
            warmup=1,  # starts the workers
        )
        (ours_ms, _), (theirs_ms, ratio) = timed["ours"], timed["theirs"]  # theirs / ours time
        loader_ms = timed["loader"][0]
        print(
            f"{size:>5} {n / ours_ms * 1e3:>12.0f} {n / theirs_ms * 1e3:>22.0f} {ratio:>6.1f}x "
            f"{n / loader_ms * 1e3:>13.0f} {theirs_ms / loader_ms:>7.1f}x"
        )


if __name__ == "__main__":
    main()
