"""The price table the worker uses: the one shipped in the package, with the operator's
overrides (``GVW_PRICES_FILE``) merged over it. Read once, at the composition root."""

from __future__ import annotations

import json
from importlib import resources

from tasks.pricing import PriceTable, price_table


def load_prices(overrides_path: str | None = None) -> PriceTable:
    shipped = json.loads(resources.files("worker").joinpath("data/prices.json").read_text())
    overrides = None
    if overrides_path:
        with open(overrides_path, encoding="utf-8") as handle:
            overrides = json.load(handle)
    return price_table(shipped, overrides=overrides)
