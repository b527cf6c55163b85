"""What a Gemini call costs, from a price table: pure arithmetic, no I/O.

The table (`worker/data/prices.json`, overridable by the operator) gives USD per million
tokens for input and output (thinking tokens are billed as output), a higher pair above a
long-context threshold for the models that have one, and the batch discount. A model is
priced by the longest table name it starts with (``gemini-2.5-flash-preview-05-20`` is
``gemini-2.5-flash``, ``gemini-2.5-flash-lite`` its own row); a model the table does not
know has no price (None), never a guessed one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.base import ModelRequest
from tasks.model_families import family_of, thinking_for

PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class ModelPrice:
    input_usd: float
    output_usd: float
    long_context_tokens: int | None = None
    input_long_usd: float | None = None
    output_long_usd: float | None = None

    def cost_usd(
        self, prompt_tokens: int, output_tokens: int, *, batch_discount: float = 0.0
    ) -> float:
        """Input and output (thinking included) tokens of one call, in USD."""
        long = self.long_context_tokens is not None and prompt_tokens > self.long_context_tokens
        input_usd = self.input_long_usd if long and self.input_long_usd else self.input_usd
        output_usd = self.output_long_usd if long and self.output_long_usd else self.output_usd
        full = (prompt_tokens * input_usd + output_tokens * output_usd) / PER_TOKENS
        return full * (1.0 - batch_discount)


@dataclass(frozen=True)
class PriceTable:
    models: Mapping[str, ModelPrice]
    batch_discount: float
    taken_on: str
    source: str

    def price_of(self, model: str) -> ModelPrice | None:
        bare = model.removeprefix("models/").lower()
        names = [name for name in self.models if bare.startswith(name)]
        return self.models[max(names, key=len)] if names else None

    def cost_usd(
        self, model: str, prompt_tokens: int, output_tokens: int, *, batch: bool = False
    ) -> float | None:
        price = self.price_of(model)
        if price is None:
            return None
        discount = self.batch_discount if batch else 0.0
        return price.cost_usd(prompt_tokens, output_tokens, batch_discount=discount)


def price_table(
    data: Mapping[str, Any], *, overrides: Mapping[str, Any] | None = None
) -> PriceTable:
    """A table from its JSON (and an operator's overrides, merged over it by model)."""
    models = dict(data.get("models", {}))
    discount = float(data.get("batch_discount", 0.0))
    taken_on, source = str(data.get("taken_on", "")), str(data.get("source", ""))
    if overrides:
        models.update(overrides.get("models", {}))
        discount = float(overrides.get("batch_discount", discount))
        taken_on = str(overrides.get("taken_on", taken_on))
        source = str(overrides.get("source", source))
    return PriceTable(
        models={name.lower(): _price(name, row) for name, row in models.items()},
        batch_discount=discount,
        taken_on=taken_on,
        source=source,
    )


def _price(name: str, row: Mapping[str, Any]) -> ModelPrice:
    try:
        return ModelPrice(
            input_usd=float(row["input"]),
            output_usd=float(row["output"]),
            long_context_tokens=int(row["long_context_tokens"])
            if "long_context_tokens" in row
            else None,
            input_long_usd=float(row["input_long"]) if "input_long" in row else None,
            output_long_usd=float(row["output_long"]) if "output_long" in row else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"price table: model {name!r} needs numeric input and output") from exc


# What an answer is guessed to cost in output before it is asked: the budget reserves
# this much and settles the call's real usage afterwards. An answer of this project's
# tasks is rarely above a thousand tokens (25 boxes with labels are ~800).
OUTPUT_TOKENS_GUESS = 1024
# thinking the model decides for itself (no budget sent): Gemini 2.5 Flash spends a few
# hundred to a few thousand tokens on an image question
THINKING_TOKENS_GUESS = 1024
_THINKING_BY_LEVEL = {"MINIMAL": 0, "LOW": 256, "MEDIUM": 1024, "HIGH": 4096}


def expected_output_tokens(
    *,
    max_output_tokens: int | None,
    thinks: bool,
    thinking_budget: int | None,
    thinking_level: str | None,
) -> int:
    """Output plus thinking tokens to reserve for one call: the job's own cap where it set
    one, and the thinking the request allows (none at budget 0, or for a model family
    that does not think)."""
    output = max_output_tokens if max_output_tokens is not None else OUTPUT_TOKENS_GUESS
    if not thinks:
        thinking = 0
    elif thinking_budget is not None:
        thinking = THINKING_TOKENS_GUESS if thinking_budget < 0 else thinking_budget
    elif thinking_level is not None:
        thinking = _THINKING_BY_LEVEL.get(thinking_level.upper(), THINKING_TOKENS_GUESS)
    else:
        thinking = THINKING_TOKENS_GUESS
    return output + thinking


# text is guessed at ~4 characters a token (Gemini's own rule of thumb for English)
CHARS_PER_TOKEN = 4


def request_text_tokens(request: ModelRequest) -> int:
    """The text tokens of a request: prompt, system instruction and response schema."""
    schema = json.dumps(request.response_json_schema) if request.response_json_schema else ""
    chars = len(request.prompt) + len(request.system_instruction or "") + len(schema)
    return -(-chars // CHARS_PER_TOKEN)


def call_estimate_usd(
    prices: PriceTable,
    model: str,
    request: ModelRequest,
    *,
    image_tokens: int,
    max_output_tokens: int | None,
    thinking_budget: int | None,
    batch: bool = False,
) -> float | None:
    """What one call is expected to cost before it is asked: the tokens it sends (images
    by `tasks.tokens`, text by `request_text_tokens`) and the output and thinking it
    allows. The one estimate: the budget's reservation, batch mode's and the dry run's.
    None when the table has no price for the model."""
    thinking = thinking_for(model, spatial=request.spatial, requested_budget=thinking_budget)
    output_tokens = expected_output_tokens(
        max_output_tokens=max_output_tokens,
        thinks=family_of(model).thinking_knob is not None,
        thinking_budget=thinking.budget,
        thinking_level=thinking.level,
    )
    prompt_tokens = image_tokens + request_text_tokens(request)
    return prices.cost_usd(model, prompt_tokens, output_tokens, batch=batch)


def answer_cost_usd(
    prices: PriceTable,
    model: str,
    *,
    prompt_tokens: int,
    output_tokens: int,
    thoughts_tokens: int,
    batch: bool,
) -> float | None:
    """What an answer cost at the table's rates (thinking billed as output), to the
    micro-cent; None when the table has no price for the model."""
    cost = prices.cost_usd(model, prompt_tokens, output_tokens + thoughts_tokens, batch=batch)
    return round(cost, 8) if cost is not None else None
