"""Progress bars for counted work reported through a callback (the algorithm in reco/ never prints)."""
from __future__ import annotations

from typing import Callable, Optional

from tqdm import tqdm


def counting_bar(desc: str, unit: str) -> Callable[[int, int], None]:
    """A callback progress(done, total) that draws a tqdm bar, opened on the first call and closed when
    done reaches total."""
    bar: Optional[tqdm] = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress
