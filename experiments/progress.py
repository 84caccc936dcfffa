"""Progress bars of the study's stages (stderr, so stdout stays for results)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: int, desc: str, initial: int = 0):
    return tqdm(total=total, initial=initial, desc=desc, unit="it", file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0)
