"""The playground page in a real headless Chromium against the real app on Ray Serve.

Each test drives the page as a person would (pick, type, click, paint) and checks
what the page shows against what the server did: its stats, its images fetched
with the openai SDK, its error messages.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.integration.conftest import model_stats as serve_model_stats
from tests.integration.conftest import wait_until
from tests.support.browser import chromium, image_pixels, open_page
from tests.support.hardened_app import API_KEY
from tests.support.images import assert_close, decode_b64, pixels

# Set to a path (e.g. docs/playground.png) to save a screenshot of a finished image.
SCREENSHOT_ENV = "IMAGEGEN_PLAYGROUND_SCREENSHOT"
DONE = ".card[data-state=done]"


def model_stats() -> dict[str, Any]:
    """The model replica's stats, read off the thread where Playwright's sync API runs
    its event loop (nothing blocks inside that loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(serve_model_stats).result()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as launched:
        yield launched


def set_fixed_seed(page, seed: int) -> None:  # type: ignore[no-untyped-def]
    page.uncheck("#random-seed")
    page.fill("#seed", str(seed))


def test_page_loads_without_console_errors_and_lists_models(browser, base_url: str) -> None:  # type: ignore[no-untyped-def]
    page, log = open_page(browser, f"{base_url}/")
    page.wait_for_function("() => document.querySelectorAll('#model option').length >= 4")
    values = page.eval_on_selector_all("#model option", "els => els.map(e => e.value)")
    models = httpx.get(f"{base_url}/v1/models").json()["data"]
    assert sorted(values) == sorted(card["id"] for card in models)
    labels = page.eval_on_selector_all(
        "#model optgroup[label=Aliases] option", "e => e.map(o => o.textContent)"
    )
    assert "dall-e-3 → tiny-sdxl" in labels and "tiny-fast → tiny-sdxl-4step" in labels
    # The first model's limits fill the form: steps default and max from its card.
    caps = next(c for c in models if c["id"] == "tiny-sdxl")["capabilities"]
    assert page.input_value("#steps") == str(caps["default_steps"])
    assert page.get_attribute("#steps", "max") == str(caps["max_steps"])
    assert page.is_visible("#sampler") and page.is_hidden("#key-section")
    # The LoRA picker lists every adapter /v1/loras has (the tiny model's demo adapters).
    adapters = {item["name"] for item in httpx.get(f"{base_url}/v1/loras").json()["data"]}
    page.wait_for_selector("#lora-section", state="visible")
    options = page.eval_on_selector_all("#lora option", "e => e.map(o => o.value)")
    assert adapters and sorted(options) == sorted(["", *adapters])
    # Phone width: everything still fits, nothing scrolls sideways.
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.close()
    assert log.page_errors == [] and log.console_errors == []


def test_generate_streams_previews_then_the_final_image(
    browser, base_url: str, client: openai.OpenAI
) -> None:  # type: ignore[no-untyped-def]
    page, log = open_page(browser, f"{base_url}/playground")
    page.wait_for_selector("#model option[value=tiny-sdxl]", state="attached")
    page.fill("#prompt", "a red fox in the snow")
    page.select_option("#size", "1536x1024")
    page.fill("#steps", "12")
    page.fill("#partial_images", "2")
    set_fixed_seed(page, 1234)
    before = model_stats()
    page.click("#generate")
    page.wait_for_selector(DONE)
    card = page.locator(".card").first
    assert card.get_attribute("data-seed") == "1234"
    assert "seed 1234" in card.locator(".info").inner_text()
    assert card.locator(".time").inner_text().endswith(" s")
    # The step scheduler's view: the class (and, had it been paused, for how long).
    assert card.locator(".scheduling").inner_text().startswith("interactive")
    # Both previews replaced each other in the one <img> before the final image.
    assert card.locator("img").get_attribute("data-partials") == "2"
    size = page.eval_on_selector(".card img", "i => [i.naturalWidth, i.naturalHeight]")
    assert size == [1536, 1024]
    shown = image_pixels(page, ".card img")
    assert page.get_attribute(".card .download", "download") == "imagegen-1234.png"
    assert model_stats()["streaming_requests"] - before["streaming_requests"] == 1
    # The same request through the openai SDK gives the same picture.
    direct = client.images.generate(
        prompt="a red fox in the snow",
        size="1536x1024",
        extra_body={"seed": 1234, "num_inference_steps": 12},
    )
    assert_close(shown, decode_b64(direct.data[0].b64_json))
    # "Reuse seed" puts the seed back into the form.
    page.check("#random-seed")
    card.locator(".reuse").click()
    assert page.input_value("#seed") == "1234" and not page.is_checked("#random-seed")
    if os.environ.get(SCREENSHOT_ENV):
        page.screenshot(path=os.environ[SCREENSHOT_ENV], full_page=True)
    page.close()
    assert log.page_errors == [] and log.console_errors == []


def test_cancel_aborts_the_stream_and_the_server_drops_it(browser, base_url: str) -> None:  # type: ignore[no-untyped-def]
    page, log = open_page(browser, f"{base_url}/")
    page.wait_for_selector("#model option[value=tiny-sdxl]", state="attached")
    page.fill("#steps", "200")
    page.fill("#n", "2")
    page.fill("#partial_images", "3")
    before = model_stats()
    page.click("#generate")
    page.wait_for_selector(".card[data-state=preview]")
    page.click("#cancel")
    wait_until(
        lambda: model_stats()["cancelled_requests"] > before["cancelled_requests"],
        60,
        "the model to count the cancelled request",
    )
    page.wait_for_selector(".card[data-state=cancelled]")
    assert page.inner_text("#status") == "Cancelled."
    assert page.is_enabled("#generate") and page.is_disabled("#cancel")
    page.close()
    assert log.page_errors == []


def solid_png(color: tuple[int, int, int], size: int = 256) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


def test_edit_with_a_painted_mask_changes_only_the_painted_part(browser, base_url: str) -> None:  # type: ignore[no-untyped-def]
    blue = (20, 60, 220)
    page, log = open_page(browser, f"{base_url}/")
    page.wait_for_selector("#model option[value=tiny-sdxl]", state="attached")
    page.check("input[name=mode][value=edit]")
    page.set_input_files(
        "#image", files=[{"name": "blue.png", "mimeType": "image/png", "buffer": solid_png(blue)}]
    )
    page.wait_for_selector("#mask-canvas", state="visible")
    page.fill("#brush", "128")
    box = page.locator("#mask-canvas").bounding_box()
    assert box is not None
    # Paint the left third, top to bottom, with a wide brush.
    page.mouse.move(box["x"] + box["width"] * 0.15, box["y"] + 2)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(box["x"] + box["width"] * 0.15, box["y"] + box["height"] * step / 20)
    page.mouse.up()
    page.select_option("#size", "256x256")
    page.fill("#steps", "4")
    page.fill("#prompt", "a sunflower")
    set_fixed_seed(page, 7)
    page.click("#generate")
    page.wait_for_selector(DONE)
    result = pixels(image_pixels(page, ".card img"))
    assert result.shape == (256, 256, 3)
    # Outside the mask the upload is kept; inside, the model drew something else.
    right = result[:, 160:]
    assert np.abs(right - np.array(blue)).max() <= 2
    left = result[20:236, 10:30]
    assert np.abs(left - np.array(blue)).mean() > 20
    page.close()
    assert log.page_errors == [] and log.console_errors == []


def test_a_bad_value_shows_the_servers_message_next_to_the_field(browser, base_url: str) -> None:  # type: ignore[no-untyped-def]
    page, log = open_page(browser, f"{base_url}/")
    page.wait_for_selector("#model option[value=tiny-sdxl]", state="attached")
    # By keyboard: type into the field and press Enter, which submits the form.
    page.focus("#steps")
    page.keyboard.press("Control+A")
    page.keyboard.type("9999")
    page.keyboard.press("Enter")
    page.wait_for_selector("#err-steps:not(:empty)")
    expected = httpx.post(
        f"{base_url}/v1/images/generations",
        json={"prompt": "x", "model": "tiny-sdxl", "num_inference_steps": 9999},
    ).json()["error"]
    assert expected["param"] == "num_inference_steps"
    assert page.inner_text("#err-steps") == expected["message"]
    assert page.get_attribute("#steps", "aria-invalid") == "true"
    assert page.locator(".card").count() == 0  # no empty result left behind
    page.close()
    assert log.page_errors == []


def test_sampler_and_free_size(browser, base_url: str, client: openai.OpenAI) -> None:  # type: ignore[no-untyped-def]
    page, log = open_page(browser, f"{base_url}/")
    page.wait_for_selector("#model option[value=tiny-sdxl]", state="attached")
    page.fill("#prompt", "a kite")
    page.select_option("#size", "256x256")
    page.select_option("#sampler", "DPM++ 2M")
    page.fill("#steps", "6")
    set_fixed_seed(page, 9)
    page.click("#generate")
    page.wait_for_selector(DONE)
    shown = image_pixels(page, ".card img")
    direct = client.images.generate(
        prompt="a kite",
        size="256x256",
        extra_body={"seed": 9, "num_inference_steps": 6, "sampler": "DPM++ 2M"},
    )
    assert_close(shown, decode_b64(direct.data[0].b64_json))
    # A free width x height (the Together dialect on the same route, in one piece).
    page.select_option("#size", "custom")
    assert page.is_disabled("#sampler") and page.is_visible("#sampler-note")
    page.fill("#width", "320")
    page.fill("#height", "192")
    page.click("#generate")
    page.wait_for_function("() => document.querySelectorAll('.card[data-state=done]').length == 2")
    newest = page.locator(".card").first
    assert newest.get_attribute("data-seed") == "9"
    size = page.eval_on_selector(".card img", "i => [i.naturalWidth, i.naturalHeight]")
    assert size == [320, 192]
    page.close()
    assert log.page_errors == [] and log.console_errors == []


def test_with_api_keys_the_page_asks_for_a_key_then_works(browser, hardened_url: str) -> None:  # type: ignore[no-untyped-def]
    # Under the /hardened route prefix, without the trailing slash: the page redirects
    # to /hardened/ so its relative URLs resolve inside the prefix.
    page, log = open_page(browser, hardened_url)
    assert page.url == f"{hardened_url}/"
    page.wait_for_selector("#key-section", state="visible")
    assert page.locator("#model option").count() == 0
    page.fill("#api_key", "sk-wrong-key-0123456789")
    page.click("#save-key")
    page.wait_for_selector("#err-api_key:not(:empty)")
    assert "Incorrect API key" in page.inner_text("#err-api_key")
    page.fill("#api_key", API_KEY)
    page.press("#api_key", "Enter")
    page.wait_for_selector("#model option[value=tiny-sdxl]", state="attached")
    assert page.is_hidden("#key-section")
    assert page.evaluate("sessionStorage.getItem('imagegen.apiKey')") == API_KEY
    page.select_option("#size", "256x256")
    page.fill("#partial_images", "1")
    page.click("#generate")
    page.wait_for_selector(DONE)
    size = page.eval_on_selector(".card img", "i => [i.naturalWidth, i.naturalHeight]")
    assert size == [256, 256]
    page.close()
    assert log.page_errors == []
