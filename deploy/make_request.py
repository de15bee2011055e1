"""Write ``deploy/request_digits.json``, the README's request to a served digits model.

One real image of scikit-learn's digits (the first image of the test split, seed 0) at the
default resolution, 16 px, as the scoring server's JSON body: ``{"inputs": (1, 3, 16, 16)}``,
RGB in [0, 1], four decimals. Prints the digit it shows.

    python deploy/make_request.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REQUEST = Path(__file__).resolve().parent / "request_digits.json"


def digits_request(index: int = 0, resolution: int = 16) -> tuple[str, int]:
    """The JSON body and the label of test image ``index`` of digits at ``resolution``."""
    sys.path.insert(0, str(REQUEST.parents[1]))
    from dha_train.data import load_dataset

    image, label = load_dataset("digits", None, resolution, seed=0).test[index]
    inputs = np.round(image.numpy()[None].astype(np.float64), 4).tolist()
    return json.dumps({"inputs": inputs}, separators=(",", ":")) + "\n", int(label)


if __name__ == "__main__":
    body, label = digits_request()
    REQUEST.write_text(body)
    print(f"wrote {REQUEST} (digit {label})")
