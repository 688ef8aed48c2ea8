"""How the claim checks write their numbers in words (shared by the notebooks' claim modules)."""
from __future__ import annotations

import math
from typing import Mapping


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.3f}"


def _share(share: float) -> str:
    return f"{share:.0%}" if math.isfinite(share) else "n/a"


def _interval(change: Mapping[str, float]) -> str:
    return f"{change['diff']:+.3f} [{change['ci_low']:+.3f}, {change['ci_high']:+.3f}]"
