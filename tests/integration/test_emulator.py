"""The Gemini REST emulator, driven by the real google-genai SDK over loopback HTTP.

The emulator is the witness other tests rely on, so these tests check it against the truth
of the synthetic scenes (boxes by IoU, labels, counts) and against the wire behaviour of the
real API (error bodies, File API states, faults) as the SDK surfaces them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from worker.emulator import EmulatorServer
from worker.emulator.client import EmulatorControl
from worker.emulator.scenes import LIGHT_GREY_RGB, Scene, ShapeSpec, make_scene
from worker.emulator.vision import analyse_image_bytes

pytestmark = pytest.mark.inprocess  # the fast tier (tests/conftest.py)

API_KEY = "emulator-test-key"
MODEL = "gemini-2.5-flash"
DETECT_PROMPT = "Detect the 2d bounding boxes of the objects in the image, with labels."


# ---- fixtures and helpers --------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(api_key=API_KEY) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_state(server: EmulatorServer) -> None:
    server.reset()


@pytest.fixture(scope="module")
def client(server: EmulatorServer) -> genai.Client:
    return genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=server.base_url))


def png_part(scene: Scene) -> types.Part:
    return types.Part.from_bytes(data=scene.png_bytes(), mime_type="image/png")


def jpeg_part(scene: Scene) -> types.Part:
    return types.Part.from_bytes(data=scene.jpeg_bytes(), mime_type="image/jpeg")


def parts(*items: types.PartUnionDict) -> list[types.PartUnionDict]:
    """Contents for the SDK, typed so mypy picks the list-of-parts form."""
    return list(items)


def json_in_text(text: str) -> Any:
    """The test's own reading of model text: the JSON between the first bracket and the last
    (prose and ``` fences around it are ignored)."""
    start = min(i for i in (text.find("["), text.find("{")) if i >= 0)
    end = max(text.rfind("]"), text.rfind("}")) + 1
    return json.loads(text[start:end])


def box_2d_to_xyxy_px(box_2d: list[int], width_px: int, height_px: int) -> tuple[float, ...]:
    y_min, x_min, y_max, x_max = box_2d
    return (
        x_min / 1000 * width_px,
        y_min / 1000 * height_px,
        x_max / 1000 * width_px,
        y_max / 1000 * height_px,
    )


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def api_error(call: Any) -> errors.APIError:
    with pytest.raises(errors.APIError) as caught:
        call()
    return caught.value


def error_details(exc: errors.APIError) -> list[dict[str, Any]]:
    details = exc.details["error"].get("details", [])
    assert isinstance(details, list)
    return details


def raw_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


# ---- seeing: detection, classification, captions ---------------------------------------


@pytest.mark.parametrize(
    ("width_px", "height_px", "shape_count", "encoding"),
    [
        pytest.param(640, 480, 3, "png", id="640x480-png"),
        pytest.param(480, 640, 4, "jpeg", id="portrait-480x640-jpeg"),
        pytest.param(1024, 1024, 5, "png", id="square-1024-png"),
        pytest.param(1920, 1080, 6, "jpeg", id="wide-1920x1080-jpeg"),
        pytest.param(300, 200, 2, "png", id="small-300x200-png"),
        pytest.param(2400, 1000, 8, "jpeg", id="panorama-2400x1000-jpeg"),
    ],
)
def test_detection_boxes_match_the_truth(
    client: genai.Client, width_px: int, height_px: int, shape_count: int, encoding: str
) -> None:
    scene = make_scene(width_px, height_px, shape_count, seed=width_px + shape_count)
    part = png_part(scene) if encoding == "png" else jpeg_part(scene)

    response = client.models.generate_content(model=MODEL, contents=parts(part, DETECT_PROMPT))

    assert response.text is not None
    items = json_in_text(response.text)
    found = {item["label"]: item["box_2d"] for item in items}
    assert sorted(found) == sorted(scene.labels)
    for shape in scene.shapes:
        box_px = box_2d_to_xyxy_px(found[shape.label], width_px, height_px)
        assert iou(box_px, shape.box_xyxy_px) >= 0.9, shape.label


def test_detection_text_looks_like_gemini_2_output(client: genai.Client) -> None:
    scene = make_scene(640, 480, 3, seed=7)
    texts = [
        client.models.generate_content(
            model=MODEL, contents=parts(png_part(scene), f"{DETECT_PROMPT} Request {i}.")
        ).text
        for i in range(24)
    ]
    assert all(t is not None and t.endswith("\n```") for t in texts), "no newline after fence"
    with_prose = [t for t in texts if t is not None and not t.startswith("```json\n")]
    assert 0 < len(with_prose) < len(texts), "prose before the fence on some calls only"
    assert all(t.startswith("Here are the bounding box detections:\n```json\n") for t in with_prose)
    again = client.models.generate_content(
        model=MODEL, contents=parts(png_part(scene), f"{DETECT_PROMPT} Request 0.")
    )
    assert again.text == texts[0], "the same request gets the same answer"


def test_gemini_3_answers_bare_json(client: genai.Client) -> None:
    scene = make_scene(640, 480, 2, seed=3)
    response = client.models.generate_content(
        model="gemini-3-flash-preview", contents=parts(png_part(scene), DETECT_PROMPT)
    )
    assert response.text is not None
    assert response.text.startswith("[\n  {")
    assert len(json.loads(response.text)) == 2


def test_detection_in_json_mode_follows_the_schema(client: genai.Client) -> None:
    scene = make_scene(800, 600, 3, seed=11)
    schema = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "box_2d": {"type": "array", "items": {"type": "integer"}},
                "label": {"type": "string"},
            },
            "required": ["box_2d", "label"],
        },
    }
    response = client.models.generate_content(
        model=MODEL,
        contents=parts(png_part(scene), "Find every shape."),
        config=types.GenerateContentConfig(
            response_mime_type="application/json",
            response_json_schema=schema,
            thinking_config=types.ThinkingConfig(thinking_budget=0),
        ),
    )
    assert response.text is not None
    items = json.loads(response.text)  # JSON mode: bare JSON, no fence
    assert sorted(item["label"] for item in items) == sorted(scene.labels)
    truth = {s.label: s for s in scene.shapes}
    for item in items:
        box_px = box_2d_to_xyxy_px(item["box_2d"], 800, 600)
        assert iou(box_px, truth[item["label"]].box_xyxy_px) >= 0.9


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        pytest.param("Detect the bounding boxes of the red shapes.", {"red circle"}, id="colour"),
        pytest.param(
            "Detect the bounding boxes of all circles.", {"red circle", "blue circle"}, id="kind"
        ),
        pytest.param(
            "Detect the bounding box of the green triangle.", {"green triangle"}, id="both"
        ),
        pytest.param("Detect the bounding boxes of the purple shapes.", set(), id="absent"),
    ],
)
def test_detection_keeps_only_what_the_prompt_names(
    client: genai.Client, prompt: str, expected: set[str]
) -> None:
    scene = make_scene(
        900, 600, ["red circle", "blue circle", "green triangle", "yellow rectangle"], seed=5
    )
    response = client.models.generate_content(model=MODEL, contents=parts(png_part(scene), prompt))
    assert response.text is not None
    assert {item["label"] for item in json_in_text(response.text)} == expected


def test_emulator_looks_at_the_raw_pixel_grid_and_ignores_exif_orientation(
    client: genai.Client,
) -> None:
    scene = make_scene(800, 500, ["red rectangle", "blue circle"], seed=2)
    # stored sideways with orientation 6 ("rotate 90 CW to view"): a viewer shows the scene
    # upright, but the pixel grid as sent is 500 wide and 800 high
    stored = scene.image.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())

    response = client.models.generate_content(
        model=MODEL,
        contents=parts(
            types.Part.from_bytes(data=buffer.getvalue(), mime_type="image/jpeg"),
            DETECT_PROMPT,
        ),
    )

    assert response.text is not None
    found = {item["label"]: item["box_2d"] for item in json_in_text(response.text)}
    for shape in scene.shapes:
        x_min, y_min, x_max, y_max = shape.box_xyxy_px
        # ROTATE_90 (counter-clockwise) maps upright (x, y) to stored (y, 800 - x)
        expected_in_stored = (y_min, 800 - x_max, y_max, 800 - x_min)
        box_px = box_2d_to_xyxy_px(found[shape.label], 500, 800)
        assert iou(box_px, expected_in_stored) >= 0.9
        assert iou(box_px, shape.box_xyxy_px) < 0.5  # not the upright boxes


def test_heic_images_are_seen_too(client: genai.Client) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    scene = make_scene(640, 480, ["red circle", "blue rectangle"], seed=1)
    buffer = io.BytesIO()
    pillow_heif.from_pillow(scene.image).save(buffer, quality=95)
    part = types.Part.from_bytes(data=buffer.getvalue(), mime_type="image/heic")
    response = client.models.generate_content(model=MODEL, contents=parts(part, "Caption."))
    assert response.text is not None
    assert "a red circle" in response.text and "a blue rectangle" in response.text


def test_segmentation_items_carry_box_sized_png_masks(client: genai.Client) -> None:
    scene = make_scene(640, 480, ["red circle", "blue triangle"], seed=9)
    response = client.models.generate_content(
        model=MODEL,
        contents=parts(png_part(scene), "Give the segmentation masks for the shapes."),
    )
    assert response.text is not None
    items = json_in_text(response.text)
    assert [list(item) for item in items] == [["box_2d", "mask", "label"]] * 2
    for item in items:
        assert item["mask"].startswith("data:image/png;base64,")
        png = base64.b64decode(item["mask"].removeprefix("data:image/png;base64,"))
        mask = Image.open(io.BytesIO(png))
        assert (mask.mode, mask.size) == ("L", (256, 256))
        values = np.asarray(mask)
        # a probability map: certain inside and outside, soft at the edges
        assert values.min() == 0
        assert values.max() >= 250
        assert ((values > 0) & (values < 255)).any()
        fill = float((values > 127).mean())
        expected_fill = 0.785 if item["label"] == "red circle" else 0.5
        assert abs(fill - expected_fill) < 0.05


@pytest.mark.parametrize(
    ("candidates", "shapes", "expected"),
    [
        pytest.param(
            ["circle", "square", "triangle", "dog"], ["red circle"], ["circle"], id="kind"
        ),
        pytest.param(
            ["circle", "square", "triangle"],
            ["red rectangle", "blue triangle"],
            ["square", "triangle"],
            id="square-is-a-rectangle",
        ),
        pytest.param(["red", "green", "blue"], ["green ellipse"], ["green"], id="colour"),
        pytest.param(["cat", "dog"], ["red circle"], [], id="nothing-fits"),
    ],
)
def test_classification_chooses_enum_labels_present(
    client: genai.Client, candidates: list[str], shapes: list[str], expected: list[str]
) -> None:
    scene = make_scene(640, 480, shapes, seed=4)
    schema = {
        "type": "object",
        "properties": {
            "labels": {"type": "array", "items": {"type": "string", "enum": candidates}}
        },
        "required": ["labels"],
    }
    response = client.models.generate_content(
        model=MODEL,
        contents=parts(png_part(scene), "Which of the labels apply to this image?"),
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=schema
        ),
    )
    assert response.text is not None
    assert json.loads(response.text) == {"labels": expected}


def test_classification_from_candidates_in_the_prompt(client: genai.Client) -> None:
    scene = make_scene(640, 480, ["blue circle", "orange triangle"], seed=8)
    response = client.models.generate_content(
        model=MODEL,
        contents=parts(png_part(scene), 'Classify this image. Labels: ["circle", "square", "dog"]'),
    )
    assert response.text is not None
    assert json_in_text(response.text) == {"labels": ["circle"]}


def test_caption_names_every_shape(client: genai.Client) -> None:
    scene = make_scene(
        1200,
        800,
        ["red circle", "blue rectangle", "green triangle"],
        seed=6,
        background=LIGHT_GREY_RGB,
    )
    response = client.models.generate_content(
        model=MODEL,
        contents=parts(jpeg_part(scene), "Write a one-sentence caption for this image."),
    )
    assert response.text is not None
    assert response.text.startswith("A light grey background with 3 shapes:")
    for label in scene.labels:
        assert label in response.text


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        pytest.param("How many shapes are in this image?", "There are 3 shapes", id="count"),
        pytest.param("How many circles are there?", "There are 2 circles", id="count-kind"),
        pytest.param("What colour is the triangle?", "The triangle is green.", id="colour"),
        pytest.param("Is there a yellow circle?", "No, there is no yellow circle", id="no"),
        pytest.param("Is there a red circle?", "Yes, there is a red circle", id="yes"),
    ],
)
def test_visual_questions_are_answered_from_the_pixels(
    client: genai.Client, question: str, expected: str
) -> None:
    scene = make_scene(800, 600, ["red circle", "blue circle", "green triangle"], seed=12)
    response = client.models.generate_content(
        model=MODEL, contents=parts(png_part(scene), question)
    )
    assert response.text is not None
    assert response.text.startswith(expected)


def test_several_images_are_answered_in_order(client: genai.Client) -> None:
    first = make_scene(640, 480, ["red circle"], seed=1)
    second = make_scene(480, 640, ["blue rectangle", "green triangle"], seed=2)
    response = client.models.generate_content(
        model=MODEL, contents=parts(png_part(first), jpeg_part(second), "Describe these images.")
    )
    assert response.text is not None
    assert re.fullmatch(
        r"Image 1: A white background with 1 shape: a red circle\.; "
        r"Image 2: A white background with 2 shapes: .+\.",
        response.text,
    )
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_tokens_details is not None
    image_tokens = {d.modality: d.token_count for d in usage.prompt_tokens_details}
    # 640x480: unit 320, 2x2 tiles; 480x640 likewise: 4 x 258 each
    assert image_tokens[types.MediaModality.IMAGE] == 2 * 4 * 258


def test_custom_schema_is_filled_from_the_scene(client: genai.Client) -> None:
    scene = make_scene(640, 480, ["red circle", "blue rectangle"], seed=3)
    schema = {
        "type": "OBJECT",
        "properties": {
            "caption": {"type": "STRING"},
            "shape_count": {"type": "INTEGER"},
            "red_count": {"type": "INTEGER"},
            "labels": {"type": "ARRAY", "items": {"type": "STRING"}},
            "has_circle": {"type": "BOOLEAN"},
            "mood": {"type": "STRING", "enum": ["calm", "busy"]},
        },
        "propertyOrdering": ["shape_count", "red_count", "labels", "has_circle", "mood", "caption"],
    }
    response = client.models.generate_content(
        model=MODEL,
        contents=parts(png_part(scene), "Summarise the image."),
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_schema=schema
        ),
    )
    assert response.text is not None
    value = json.loads(response.text)
    assert list(value) == ["shape_count", "red_count", "labels", "has_circle", "mood", "caption"]
    assert value["shape_count"] == 2
    assert value["red_count"] == 1
    assert sorted(value["labels"]) == ["blue rectangle", "red circle"]
    assert value["has_circle"] is True
    assert value["mood"] in ("calm", "busy")
    assert "red circle" in value["caption"]


def test_pydantic_response_schema_round_trips(client: genai.Client) -> None:
    from pydantic import BaseModel

    class Shape(BaseModel):
        label: str
        colour: str
        box_2d: list[int]

    class Inventory(BaseModel):
        count: int
        shapes: list[Shape]

    scene = make_scene(640, 480, ["red circle", "cyan triangle"], seed=10)
    response = client.models.generate_content(
        model=MODEL,
        contents=parts(png_part(scene), "List the shapes."),
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_schema=Inventory
        ),
    )
    assert isinstance(response.parsed, Inventory)
    assert response.parsed.count == 2
    assert {(s.label, s.colour) for s in response.parsed.shapes} == {
        ("red circle", "red"),
        ("cyan triangle", "cyan"),
    }


def test_usage_metadata_counts_image_tiles(client: genai.Client) -> None:
    scene = make_scene(960, 540, 2, seed=1)
    response = client.models.generate_content(
        model=MODEL, contents=parts(png_part(scene), "Caption this.")
    )
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_tokens_details is not None
    by_modality = {d.modality: d.token_count for d in usage.prompt_tokens_details}
    assert by_modality[types.MediaModality.IMAGE] == 1548  # the guide's 960x540 example
    assert usage.prompt_token_count == sum(v or 0 for v in by_modality.values())
    assert usage.total_token_count == (usage.prompt_token_count or 0) + (
        usage.candidates_token_count or 0
    )
    assert response.model_version == MODEL
    assert response.response_id


def test_max_output_tokens_cuts_the_answer(client: genai.Client) -> None:
    scene = make_scene(640, 480, 4, seed=2)
    response = client.models.generate_content(
        model=MODEL,
        contents=parts(png_part(scene), DETECT_PROMPT),
        config=types.GenerateContentConfig(max_output_tokens=12),
    )
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.text is not None and len(response.text) == 48


def test_count_tokens_and_streaming_use_the_same_rules(client: genai.Client) -> None:
    scene = make_scene(960, 540, 2, seed=1)
    counted = client.models.count_tokens(model=MODEL, contents=parts(png_part(scene), "Caption."))
    assert counted.total_tokens == 1548 + 2
    chunks = list(
        client.models.generate_content_stream(
            model=MODEL, contents=parts(png_part(scene), "Caption.")
        )
    )
    assert len(chunks) == 1 and chunks[0].text is not None and "2 shapes" in chunks[0].text


# ---- input errors ----------------------------------------------------------------------


def test_wrong_api_key_is_400_api_key_invalid(server: EmulatorServer) -> None:
    bad = genai.Client(api_key="wrong", http_options=types.HttpOptions(base_url=server.base_url))
    exc = api_error(lambda: bad.models.generate_content(model=MODEL, contents=parts("hi")))
    assert isinstance(exc, errors.ClientError)
    assert (exc.code, exc.status) == (400, "INVALID_ARGUMENT")
    assert error_details(exc)[0]["reason"] == "API_KEY_INVALID"
    assert server.stats()["generate_calls_by_outcome"] == {"error_400_INVALID_ARGUMENT": 1}


def test_unknown_model_is_404(client: genai.Client, server: EmulatorServer) -> None:
    exc = api_error(lambda: client.models.generate_content(model="gpt-4o", contents=parts("hi")))
    assert (exc.code, exc.status) == (404, "NOT_FOUND")
    assert exc.message is not None and exc.message.startswith(
        "models/gpt-4o is not found for API version v1"  # google-genai 3.x calls /v1/ by default
    )
    # the default accepts every gemini-* name; a narrower allowlist catches typos
    server.configure(model_prefixes=["gemini-2.5-", "gemini-3-"])
    exc = api_error(
        lambda: client.models.generate_content(model="gemini-3.6-flahs", contents=parts("hi"))
    )
    assert exc.code == 404
    assert client.models.generate_content(model="gemini-3-flash", contents=parts("hi")).text


def test_thinking_budget_and_level_together_are_400(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(
            thinking_budget=0, thinking_level=types.ThinkingLevel.LOW
        )
    )
    exc = api_error(
        lambda: client.models.generate_content(
            model="gemini-3-flash", contents=parts("hi"), config=config
        )
    )
    assert (exc.code, exc.status) == (400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    ("data", "mime_type", "message"),
    [
        pytest.param(
            b"\x89PNG\r\n\x1a\nbroken", "image/png", "Unable to process input image", id="corrupt"
        ),
        pytest.param(
            b"GIF89a\x01\x00\x01\x00", "image/gif", "Unsupported MIME type: image/gif", id="gif"
        ),
    ],
)
def test_bad_images_are_400(
    client: genai.Client, data: bytes, mime_type: str, message: str
) -> None:
    part = types.Part.from_bytes(data=data, mime_type=mime_type)
    exc = api_error(lambda: client.models.generate_content(model=MODEL, contents=parts(part, "hi")))
    assert (exc.code, exc.status) == (400, "INVALID_ARGUMENT")
    assert exc.message is not None and exc.message.startswith(message)


# ---- the File API ----------------------------------------------------------------------


def test_upload_get_list_delete(client: genai.Client, server: EmulatorServer) -> None:
    scene = make_scene(640, 480, 3, seed=1)
    data = scene.png_bytes()
    uploaded = client.files.upload(
        file=io.BytesIO(data), config={"mime_type": "image/png", "display_name": "scene one"}
    )

    assert uploaded.name is not None and re.fullmatch(r"files/[a-z0-9]{12}", uploaded.name)
    assert uploaded.display_name == "scene one"
    assert uploaded.mime_type == "image/png"
    assert uploaded.size_bytes == len(data)
    assert uploaded.state == types.FileState.ACTIVE
    assert uploaded.source == types.FileSource.UPLOADED
    expected_hash = base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode()
    assert uploaded.sha256_hash == expected_hash
    assert uploaded.create_time is not None and uploaded.expiration_time is not None
    assert uploaded.expiration_time - uploaded.create_time == timedelta(hours=48)
    assert uploaded.uri == f"{server.base_url}/v1beta/files/{uploaded.name.removeprefix('files/')}"

    fetched = client.files.get(name=uploaded.name)
    assert fetched.sha256_hash == expected_hash and fetched.state == types.FileState.ACTIVE

    response = client.models.generate_content(
        model=MODEL, contents=parts(uploaded, "How many shapes are there?")
    )
    assert response.text == "There are 3 shapes in the image."

    second = client.files.upload(file=io.BytesIO(b"x" * 10), config={"mime_type": "image/png"})
    listed = list(client.files.list(config={"page_size": 1}))  # the pager follows the token
    assert [f.name for f in listed] == [uploaded.name, second.name]

    client.files.delete(name=uploaded.name)
    exc = api_error(lambda: client.files.get(name=uploaded.name))
    assert (exc.code, exc.status) == (403, "PERMISSION_DENIED")
    assert [f.name for f in client.files.list()] == [second.name]


def test_large_upload_arrives_in_8_mib_chunks(client: genai.Client, server: EmulatorServer) -> None:
    data = np.random.default_rng(0).bytes(9 * 1024 * 1024 + 123)
    uploaded = client.files.upload(file=io.BytesIO(data), config={"mime_type": "image/png"})
    assert uploaded.size_bytes == len(data)
    expected_hash = base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode()
    assert uploaded.sha256_hash == expected_hash
    stats = server.stats()
    assert stats["upload_chunks_total"] == 2  # the SDK sends 8 MiB, then the rest with finalize
    assert stats["upload_bytes_by_file"] == {uploaded.name: len(data)}


def test_upload_offsets_are_checked(server: EmulatorServer) -> None:
    start_headers = {
        "x-goog-api-key": API_KEY,
        "Content-Type": "application/json",
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": "6",
        "X-Goog-Upload-Header-Content-Type": "image/png",
    }
    status, headers, _ = raw_post(
        f"{server.base_url}/upload/v1beta/files", b'{"file": {"displayName": "raw"}}', start_headers
    )
    assert status == 200 and headers["x-goog-upload-status"] == "active"
    upload_url = headers["x-goog-upload-url"]
    assert upload_url.startswith(f"{server.base_url}/upload/v1beta/files?upload_id=")

    def chunk(command: str, offset: int, body: bytes) -> tuple[int, dict[str, str], bytes]:
        return raw_post(
            upload_url,
            body,
            {"X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)},
        )

    assert chunk("upload", 0, b"abc")[0] == 200
    status, headers, body = chunk("upload", 1, b"def")  # wrong offset
    assert status == 400 and json.loads(body)["error"]["status"] == "INVALID_ARGUMENT"
    assert headers["x-goog-upload-size-received"] == "3"
    status, headers, body = chunk("upload, finalize", 3, b"def")  # resumed at the right offset
    assert status == 200 and headers["x-goog-upload-status"] == "final"
    assert body.endswith(b"}\n") and body.startswith(b'{\n  "file": {')
    assert json.loads(body)["file"]["sizeBytes"] == "6"


def test_file_still_processing_is_400_then_works_once_active(
    client: genai.Client, server: EmulatorServer
) -> None:
    server.configure(processing_delay_s=0.3)
    scene = make_scene(640, 480, 2, seed=1)
    uploaded = client.files.upload(
        file=io.BytesIO(scene.png_bytes()), config={"mime_type": "image/png"}
    )
    assert uploaded.state == types.FileState.PROCESSING and uploaded.name is not None

    exc = api_error(
        lambda: client.models.generate_content(model=MODEL, contents=parts(uploaded, "Caption."))
    )
    assert (exc.code, exc.status) == (400, "FAILED_PRECONDITION")

    deadline = time.monotonic() + 5
    while client.files.get(name=uploaded.name).state != types.FileState.ACTIVE:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    response = client.models.generate_content(model=MODEL, contents=parts(uploaded, "Caption."))
    assert response.text is not None and "2 shapes" in response.text


def test_expired_file_is_403_permission_denied(
    client: genai.Client, server: EmulatorServer
) -> None:
    scene = make_scene(640, 480, 2, seed=1)
    uploaded = client.files.upload(
        file=io.BytesIO(scene.png_bytes()), config={"mime_type": "image/png"}
    )
    assert uploaded.name is not None
    assert server.expire_files([uploaded.name]) == [uploaded.name]

    exc = api_error(
        lambda: client.models.generate_content(model=MODEL, contents=parts(uploaded, "Caption."))
    )
    assert isinstance(exc, errors.ClientError)
    assert (exc.code, exc.status) == (403, "PERMISSION_DENIED")
    file_id = uploaded.name.removeprefix("files/")
    assert exc.message == (
        f"You do not have permission to access the File {file_id} or it may not exist."
    )


def test_file_ttl_is_configurable(client: genai.Client, server: EmulatorServer) -> None:
    server.configure(file_ttl_s=0.2)
    uploaded = client.files.upload(file=io.BytesIO(b"1234"), config={"mime_type": "image/png"})
    assert uploaded.name is not None and uploaded.expiration_time and uploaded.create_time
    assert uploaded.expiration_time - uploaded.create_time == timedelta(milliseconds=200)
    time.sleep(0.25)
    assert api_error(lambda: client.files.get(name=uploaded.name)).code == 403


# ---- faults ----------------------------------------------------------------------------


def test_queued_429_carries_retry_info_and_quota(
    client: genai.Client, server: EmulatorServer
) -> None:
    server.queue_fault("429", retry_delay_s=7)
    exc = api_error(lambda: client.models.generate_content(model=MODEL, contents=parts("hi")))
    assert isinstance(exc, errors.ClientError)
    assert (exc.code, exc.status) == (429, "RESOURCE_EXHAUSTED")
    by_type = {d["@type"].rsplit(".", 1)[-1]: d for d in error_details(exc)}
    assert list(by_type) == ["QuotaFailure", "Help", "RetryInfo"]
    assert by_type["RetryInfo"]["retryDelay"] == "7s"
    violation = by_type["QuotaFailure"]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert violation["quotaDimensions"]["model"] == MODEL
    # consumed: the next call succeeds
    assert client.models.generate_content(model=MODEL, contents=parts("hi")).text


def test_queued_daily_429_names_a_per_day_quota(
    client: genai.Client, server: EmulatorServer
) -> None:
    server.queue_fault("429_daily")
    exc = api_error(lambda: client.models.generate_content(model=MODEL, contents=parts("hi")))
    quota = next(d for d in error_details(exc) if d["@type"].endswith("QuotaFailure"))
    assert quota["violations"][0]["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"


@pytest.mark.parametrize(
    ("kind", "error_type", "code", "status"),
    [
        pytest.param("500", errors.ServerError, 500, "INTERNAL", id="500"),
        pytest.param("503", errors.ServerError, 503, "UNAVAILABLE", id="503"),
        pytest.param("400", errors.ClientError, 400, "INVALID_ARGUMENT", id="400"),
    ],
)
def test_queued_http_errors(
    client: genai.Client,
    server: EmulatorServer,
    kind: str,
    error_type: type[errors.APIError],
    code: int,
    status: str,
) -> None:
    server.queue_fault(kind, count=2)
    for _ in range(2):
        exc = api_error(lambda: client.models.generate_content(model=MODEL, contents=parts("hi")))
        assert isinstance(exc, error_type)
        assert (exc.code, exc.status) == (code, status)
    assert client.models.generate_content(model=MODEL, contents=parts("hi")).text


def test_safety_fault_blocks_the_candidate(client: genai.Client, server: EmulatorServer) -> None:
    server.queue_fault("safety")
    scene = make_scene(640, 480, 2, seed=1)
    response = client.models.generate_content(
        model=MODEL, contents=parts(png_part(scene), "Caption.")
    )
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert response.text is None


def test_prompt_blocked_fault_has_no_candidates(
    client: genai.Client, server: EmulatorServer
) -> None:
    server.queue_fault("prompt_blocked")
    response = client.models.generate_content(model=MODEL, contents=parts("hi"))
    assert not response.candidates
    assert response.prompt_feedback is not None
    assert response.prompt_feedback.block_reason == types.BlockedReason.SAFETY


def test_max_tokens_fault_cuts_the_normal_answer(
    client: genai.Client, server: EmulatorServer
) -> None:
    scene = make_scene(640, 480, 3, seed=1)
    contents = parts(png_part(scene), DETECT_PROMPT)
    normal = client.models.generate_content(model=MODEL, contents=contents).text
    server.queue_fault("max_tokens")
    cut = client.models.generate_content(model=MODEL, contents=contents)
    assert cut.candidates is not None
    assert cut.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert normal is not None and cut.text is not None
    assert normal.startswith(cut.text) and 0 < len(cut.text) < len(normal)
    with pytest.raises(json.JSONDecodeError):
        json_in_text(cut.text)


def test_garbage_and_empty_faults(client: genai.Client, server: EmulatorServer) -> None:
    scene = make_scene(640, 480, 3, seed=1)
    server.queue_fault("garbage")
    server.queue_fault("empty")
    garbage = client.models.generate_content(
        model=MODEL, contents=parts(png_part(scene), DETECT_PROMPT)
    )
    assert garbage.candidates is not None
    assert garbage.candidates[0].finish_reason == types.FinishReason.STOP
    assert garbage.text is not None
    with pytest.raises(json.JSONDecodeError):
        json_in_text(garbage.text)
    empty = client.models.generate_content(
        model=MODEL, contents=parts(png_part(scene), DETECT_PROMPT)
    )
    assert empty.candidates is not None
    assert empty.candidates[0].finish_reason == types.FinishReason.STOP
    assert not empty.text


def test_fault_for_one_model_leaves_others_alone(
    client: genai.Client, server: EmulatorServer
) -> None:
    server.queue_fault("503", model="gemini-2.5-pro")
    assert client.models.generate_content(model=MODEL, contents=parts("hi")).text
    exc = api_error(
        lambda: client.models.generate_content(model="gemini-2.5-pro", contents=parts("hi"))
    )
    assert exc.code == 503


def test_latency_is_added(client: genai.Client, server: EmulatorServer) -> None:
    server.configure(latency_ms=150)
    started = time.perf_counter()
    client.models.generate_content(model=MODEL, contents=parts("hi"))
    assert time.perf_counter() - started >= 0.15


# ---- stats and remote control ----------------------------------------------------------


def test_stats_count_calls_uploads_and_bytes(client: genai.Client, server: EmulatorServer) -> None:
    scene = make_scene(640, 480, 2, seed=1)
    png = scene.png_bytes()
    uploaded = client.files.upload(file=io.BytesIO(png), config={"mime_type": "image/png"})
    client.models.generate_content(
        model=MODEL,
        contents=parts(png_part(scene), uploaded, DETECT_PROMPT),
        config=types.GenerateContentConfig(temperature=0.5),
    )
    client.models.generate_content(model="gemini-3-flash", contents=parts("hi"))
    server.queue_fault("503")
    api_error(lambda: client.models.generate_content(model=MODEL, contents=parts("hi")))

    stats = server.stats()
    assert stats["generate_calls_total"] == 3
    assert stats["generate_calls_by_model"] == {MODEL: 2, "gemini-3-flash": 1}
    assert stats["generate_calls_by_outcome"] == {"ok": 2, "503": 1}
    assert stats["images_total"] == 2
    assert stats["images_by_source"] == {"inline": 1, "file": 1}
    assert stats["uploads_started"] == stats["uploads_completed"] == 1
    assert stats["upload_bytes_by_file"] == {uploaded.name: len(png)}
    assert stats["bytes_received_total"] > 2 * len(png)  # the upload plus the inline base64
    first = stats["requests"][0]
    assert (first["model"], first["images"], first["task"]) == (MODEL, 2, "detect")
    assert first["generation_config"]["temperature"] == 0.5
    assert first["time_rfc3339"].endswith("Z") and first["time"] <= time.time()
    assert stats["generate_calls"] == stats["generate_calls_total"]


def test_remote_control_over_http(client: genai.Client, server: EmulatorServer) -> None:
    control = EmulatorControl(server.base_url)
    assert control.health()
    control.configure(prose_one_in=0)
    assert control.config()["prose_one_in"] == 0
    control.queue_fault("503")
    assert (
        api_error(lambda: client.models.generate_content(model=MODEL, contents=parts("hi"))).code
        == 503
    )
    uploaded = client.files.upload(file=io.BytesIO(b"1234"), config={"mime_type": "image/png"})
    assert control.expire_files() == [uploaded.name]
    assert control.stats()["generate_calls_by_outcome"] == {"503": 1}
    control.reset()
    assert control.stats()["generate_calls_total"] == 0
    assert control.config()["prose_one_in"] == 3


def test_command_line_emulator_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.emulator", "--port", "0", "--api-key", API_KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert base_url, line
        remote = genai.Client(
            api_key=API_KEY, http_options=types.HttpOptions(base_url=base_url.group(0))
        )
        assert remote.models.generate_content(model=MODEL, contents=parts("hi")).text
        assert EmulatorControl(base_url.group(0)).stats()["generate_calls_total"] == 1
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.wallclock  # a CPU-bound second: ahead of other tests on the CPU
def test_large_image_analyses_quickly() -> None:
    scene = make_scene(4000, 3000, 6, seed=1)
    jpeg = scene.jpeg_bytes()
    started = time.perf_counter()
    analysis = analyse_image_bytes(jpeg)
    assert time.perf_counter() - started < 1.0
    assert sorted(s.label for s in analysis.shapes) == sorted(scene.labels)


def test_scene_truth_is_consistent() -> None:
    scene = make_scene(500, 400, [ShapeSpec("red", "rectangle", (10, 20, 110, 70)), "blue circle"])
    red = scene.shapes[0]
    assert red.box_xyxy_px == (10, 20, 110, 70)
    assert red.mask.sum() == 100 * 50
    assert red.box_2d(500, 400) == [50, 20, 175, 220]
    pixels = np.asarray(scene.image)
    assert (pixels[red.mask] == (220, 30, 30)).all()
    assert not (scene.shapes[0].mask & scene.shapes[1].mask).any()
