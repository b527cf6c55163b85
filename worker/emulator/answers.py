"""What the emulated model answers: the task is recognised from the request, the answer is
computed from what `vision.py` saw in the images.

How the task is recognised (first rule that applies; "prompt" = the user's text parts plus
the system instruction, case-insensitive):
1. detect / segment: the schema mentions `box_2d`, or the prompt mentions "bounding box",
   "box_2d", "detect"/"detection" or "segment"/"segmentation"/"mask". It is segmentation
   (items carry `"mask"`) when the prompt says segment/mask or the schema has a `mask`
   property. Only the user's text narrows the shapes ("the red shapes", "circles"), so a
   system instruction's wording never filters the answer.
2. schema: a `responseJsonSchema` or `responseSchema` is given: a value conforming to it
   (see `schema_fill.py`). Classification with an enum of labels lands here: the enum values
   naming a colour or kind present are chosen.
3. classify: the prompt says classify/classification/categorise and lists candidates
   (`[...]` or after a colon); answer `{"labels": [...]}`.
4. compare: two or more images and the prompt says compare/difference/differ/similar/same.
5. vqa: the prompt asks a question ("?" or a leading question word): "how many"/"count" ->
   the count, "what colo(u)r" -> colours, "where" -> position, is/are/does -> yes or no,
   anything else -> a description.
6. caption: everything else (captions, descriptions, custom prompts without a schema).

How answers look, as the real models write them:
- Detection without JSON mode: Gemini 1.x/2.x wrap the list in a ```json fence with no
  newline after the closing fence, one object per line, and on 1 in `prose_one_in` requests
  (by a hash of the request) put a sentence of prose before it; Gemini 3 models answer bare
  JSON. In JSON mode (`responseMimeType: application/json`) every model answers bare JSON
  laid out with 2-space indentation (arrays one number per line).
- No image: text answers say so (`NO_IMAGE_TEXT`), detection gives an empty list.
- Several images: text answers read "Image 1: ...; Image 2: ..."; detection without JSON
  mode gives one fenced list per image under "Image N:", in JSON mode one flat list whose
  labels end in " (image N)"; schema answers are filled from the shapes of all images.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from worker.emulator.schema_fill import SceneFacts, enum_matches, fill_schema
from worker.emulator.vision import ImageAnalysis, SeenShape
from worker.emulator.wording import (
    caption,
    join_words,
    mentioned_colours,
    mentioned_kinds,
    plural_phrase,
    position_phrase,
    select_shapes,
    thing_named,
    with_article,
)

MASK_SIDE_PX = 256  # real masks decode to 256x256 whatever the box shape
_DETECT_RE = re.compile(r"bounding[ _-]?box|box_2d|\bdetect(?:ion|ions|s)?\b")
_SEGMENT_RE = re.compile(r"\bsegment(?:ation|s)?\b|\bmasks?\b")
_CLASSIFY_RE = re.compile(r"\bclassif(?:y|ication)\b|\bcategori[sz]e\b")
_COMPARE_RE = re.compile(r"\bcompar(?:e|ison)\b|\bdiffer(?:s|ence|ences|ent)?\b|\bsimilar|\bsame\b")
_QUESTION_START_RE = re.compile(
    r"^\s*(how|what|which|where|who|why|when|is|are|does|do|can|could|count|any)\b"
)
_YES_NO_START_RE = re.compile(r"^\s*(is|are|does|do|can|could|any)\b")
_CANDIDATES_AFTER_COLON_RE = re.compile(
    r"(?:labels?|candidates?|categories|category|classes|options|one of)\s*:\s*([^\n]+)"
)
_PROSE_BEFORE_FENCE = "Here are the bounding box detections:\n"
NO_IMAGE_TEXT = "There is no image in this request, so there is nothing to describe."


@dataclass(frozen=True)
class Question:
    user_text: str
    system_text: str
    response_mime_type: str | None
    schema: dict[str, Any] | None
    model: str
    request_digest: int  # deterministic variation (prose or not) per distinct request
    prose_one_in: int

    @property
    def prompt(self) -> str:
        return f"{self.user_text}\n{self.system_text}".lower()

    @property
    def json_mode(self) -> bool:
        return (self.response_mime_type or "").lower() == "application/json"


@dataclass(frozen=True)
class Answer:
    text: str
    task: str


def recognise_task(question: Question, image_count: int) -> str:
    prompt = question.prompt
    schema_text = json.dumps(question.schema) if question.schema is not None else ""
    if "box_2d" in schema_text or _DETECT_RE.search(prompt) or _SEGMENT_RE.search(prompt):
        wants_mask = _SEGMENT_RE.search(prompt) or '"mask"' in schema_text
        return "segment" if wants_mask else "detect"
    if question.schema is not None:
        return "schema"
    if _CLASSIFY_RE.search(prompt) and _candidates_from_prompt(question.user_text):
        return "classify"
    user = question.user_text.lower()
    if image_count >= 2 and _COMPARE_RE.search(user):
        return "compare"
    if "?" in user or _QUESTION_START_RE.search(user):
        return "vqa"
    return "caption"


def compose_answer(question: Question, views: Sequence[ImageAnalysis]) -> Answer:
    task = recognise_task(question, len(views))
    if task in ("detect", "segment"):
        return Answer(_detection_text(question, views, with_masks=task == "segment"), task)
    if task == "schema":
        return Answer(_schema_text(question, views), task)
    if task == "classify":
        candidates = _candidates_from_prompt(question.user_text)
        labels = enum_matches(candidates, [s for v in views for s in v.shapes])
        return Answer(_json_text(question, {"labels": labels}), task)
    if task == "compare":
        return Answer(_wrap_text(question, "comparison", _comparison(views)), task)
    if task == "vqa":
        answers = [_answer_question(question.user_text, v) for v in views]
        return Answer(_wrap_text(question, "answer", _per_image(answers)), task)
    return Answer(_wrap_text(question, "caption", _per_image([caption(v) for v in views])), task)


def encode_mask_data_uri(shape: SeenShape) -> str:
    """The box-sized mask as Gemini 2.5 sends it: a 256x256 8-bit PNG probability map of the
    box area, as a data URI. Edges are soft (bilinear resize, then a slight blur) like a
    model's probabilities, so only a reader that resizes and binarizes at the midpoint
    gets the true shape back."""
    mask = Image.fromarray(np.where(shape.mask_crop, 255, 0).astype(np.uint8))
    mask = mask.resize((MASK_SIDE_PX, MASK_SIDE_PX), Image.Resampling.BILINEAR)
    mask = mask.filter(ImageFilter.GaussianBlur(radius=1.5))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _wanted_shapes(question: Question, view: ImageAnalysis) -> list[SeenShape]:
    # only the user's words narrow the answer, never the system instruction's
    text = question.user_text
    return select_shapes(view.shapes, mentioned_colours(text), mentioned_kinds(text))


def _facts(shapes: Sequence[SeenShape], views: Sequence[ImageAnalysis]) -> SceneFacts:
    return SceneFacts(
        shapes=list(shapes),
        caption=_per_image([caption(v) for v in views]),
        mask_encoder=encode_mask_data_uri,
    )


def _detection_text(question: Question, views: Sequence[ImageAnalysis], with_masks: bool) -> str:
    if not views:
        return _format_detection(question, [], allow_prose=False)
    per_image: list[Any] = []
    for view in views:
        shapes = _wanted_shapes(question, view)
        if question.schema is not None:
            per_image.append(fill_schema(question.schema, _facts(shapes, [view])))
        else:
            per_image.append([_detection_item(s, with_masks) for s in shapes])
    if len(per_image) == 1:
        return _format_detection(question, per_image[0])
    if question.json_mode:
        flat: list[Any] = []
        for number, items in enumerate(per_image, start=1):
            for item in items if isinstance(items, list) else [items]:
                if isinstance(item, dict) and isinstance(item.get("label"), str):
                    item = {**item, "label": f"{item['label']} (image {number})"}
                flat.append(item)
        return json.dumps(flat, indent=2, ensure_ascii=False)
    return "\n".join(
        f"Image {number}:\n{_format_detection(question, items, allow_prose=False)}"
        for number, items in enumerate(per_image, start=1)
    )


def _detection_item(shape: SeenShape, with_mask: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"box_2d": shape.box_2d()}
    if with_mask:
        item["mask"] = encode_mask_data_uri(shape)
    item["label"] = shape.label
    return item


def _format_detection(question: Question, value: Any, allow_prose: bool = True) -> str:
    if question.json_mode or not isinstance(value, list):
        return _json_text(question, value)
    if value:
        lines = ",\n".join("  " + json.dumps(item, ensure_ascii=False) for item in value)
        listing = f"[\n{lines}\n]"
    else:
        listing = "[]"
    if _is_gemini_3(question.model):
        return listing
    fenced = f"```json\n{listing}\n```"
    one_in = question.prose_one_in
    if allow_prose and one_in > 0 and question.request_digest % one_in == 0:
        return _PROSE_BEFORE_FENCE + fenced
    return fenced


def _schema_text(question: Question, views: Sequence[ImageAnalysis]) -> str:
    shapes = [s for v in views for s in v.shapes]
    value = fill_schema(question.schema, _facts(shapes, views))
    if (question.response_mime_type or "").lower() == "text/x.enum" and isinstance(value, str):
        return value
    return _json_text(question, value)


def _json_text(question: Question, value: Any) -> str:
    if question.json_mode:
        return json.dumps(value, indent=2, ensure_ascii=False)
    if _is_gemini_3(question.model):
        return json.dumps(value, ensure_ascii=False)
    return f"```json\n{json.dumps(value, ensure_ascii=False)}\n```"


def _wrap_text(question: Question, key: str, text: str) -> str:
    return _json_text(question, {key: text}) if question.json_mode else text


def _per_image(texts: Sequence[str]) -> str:
    if not texts:
        return NO_IMAGE_TEXT
    if len(texts) == 1:
        return texts[0]
    return "; ".join(f"Image {number}: {text}" for number, text in enumerate(texts, start=1))


def _answer_question(question_text: str, view: ImageAnalysis) -> str:
    text = question_text.lower()
    colours, kinds = mentioned_colours(text), mentioned_kinds(text)
    shapes = select_shapes(view.shapes, colours, kinds)
    if "how many" in text or re.search(r"\bcount\b|\bnumber of\b", text):
        phrase = plural_phrase(len(shapes), colours, kinds)
        return f"There {'is' if len(shapes) == 1 else 'are'} {phrase} in the image."
    if re.search(r"\bwhat colou?rs?\b|\bwhich colou?rs?\b", text):
        if not shapes:
            return f"There is no {thing_named(set(), kinds)} in the image."
        names = list(dict.fromkeys(s.colour_name for s in shapes))
        verb = "is" if len(shapes) == 1 else "are"
        return f"The {thing_named(set(), kinds, len(shapes))} {verb} {join_words(names)}."
    if text.lstrip().startswith("where") and shapes:
        return " ".join(f"The {s.label} is {position_phrase(s)}." for s in shapes)
    if _YES_NO_START_RE.search(text) and (colours or kinds):
        thing = thing_named(colours, kinds)
        if shapes:
            return f"Yes, there is {with_article(thing)} in the image."
        return f"No, there is no {thing} in the image."
    return caption(view)


def _comparison(views: Sequence[ImageAnalysis]) -> str:
    parts = [_per_image([caption(v) for v in views])]
    label_sets = [{s.label for s in v.shapes} for v in views]
    common = sorted(set.intersection(*label_sets)) if label_sets else []
    parts.append(f"In common: {join_words(common) if common else 'nothing'}.")
    for number, labels in enumerate(label_sets, start=1):
        only = sorted(
            labels - set().union(*(o for i, o in enumerate(label_sets, 1) if i != number))
        )
        if only:
            parts.append(f"Only in image {number}: {join_words(only)}.")
    return " ".join(parts)


def _candidates_from_prompt(user_text: str) -> list[str]:
    """Candidate labels from `[...]` (JSON or bare words) or from `labels: a, b or c`."""
    bracketed = re.search(r"\[([^\[\]]+)\]", user_text)
    if bracketed:
        raw = bracketed.group(1)
    else:
        after_colon = _CANDIDATES_AFTER_COLON_RE.search(user_text.lower())
        if not after_colon:
            return []
        raw = after_colon.group(1)
    pieces = re.split(r",|;|\bor\b|\n", raw)
    cleaned = [p.strip().strip("\"'`.").strip() for p in pieces]
    return [c for c in cleaned if c]


def _is_gemini_3(model: str) -> bool:
    return model.startswith("gemini-3")
