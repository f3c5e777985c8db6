"""The imagine images API end to end through Ray Serve, on the local and the S3 backend."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import datetime

import httpx
import openai
import pytest
from PIL import Image

from tests.support.http import assert_error
from tests.support.images import assert_close, decode_b64


@pytest.fixture(params=["local", "s3"])
def api(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    fixture = "base_url" if request.param == "local" else "s3_base_url"
    with httpx.Client(base_url=request.getfixturevalue(fixture), timeout=120) as session:
        yield session


def imagine(api: httpx.Client, **body: object) -> dict:
    response = api.post("/v1/images/imagine", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_whole_object_lifecycle(api: httpx.Client) -> None:
    name = f"lighthouse-{uuid.uuid4().hex[:8]}"
    # 1. Create: a private Image object.
    image = imagine(api, name=name, prompt="a lighthouse", negative_prompt="fog", seed=7)
    assert set(image) == {
        "id", "name", "url", "width", "height", "format", "size", "created_at", "seed"
    }  # fmt: skip
    assert image["id"].startswith("image_") and len(image["id"]) > 32
    assert (image["name"], image["url"], image["seed"]) == (name, None, 7)
    assert (image["width"], image["height"], image["format"]) == (1024, 1024, "png")
    assert datetime.fromisoformat(image["created_at"]).tzinfo is not None
    # 2. Get and list.
    assert api.get(f"/v1/images/{image['id']}").json() == image
    listed = api.get("/v1/images", params={"name": name}).json()
    assert listed["object"] == "list" and listed["data"] == [image]
    assert (listed["first_id"], listed["last_id"], listed["has_more"]) == (
        image["id"], image["id"], False
    )  # fmt: skip
    # 3. Download: the bytes the record describes.
    download = api.get(f"/v1/images/{image['id']}/download")
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"
    assert len(download.content) == image["size"]
    assert f'filename="{name}.png"' in download.headers["content-disposition"]
    assert Image.open(io.BytesIO(download.content)).size == (1024, 1024)
    # 4. Publish: a stable URL anyone can fetch, with no credentials.
    published = api.post(f"/v1/images/{image['id']}/publish").json()
    url = published["url"]
    assert url and published["id"] == image["id"]
    fetched = httpx.get(url, timeout=30)
    assert fetched.status_code == 200 and fetched.content == download.content
    assert api.post(f"/v1/images/{image['id']}/publish").json()["url"] == url
    assert api.get(f"/v1/images/{image['id']}").json()["url"] == url
    assert api.get("/v1/images", params={"name": name}).json()["data"][0]["url"] == url
    # 5. Unpublish: the URL stops working at once; the image itself stays.
    private = api.post(f"/v1/images/{image['id']}/unpublish").json()
    assert private["url"] is None
    assert_error(httpx.get(url, timeout=30), 404, None, "invalid_request_error")
    assert api.get(f"/v1/images/{image['id']}/download").content == download.content
    # 6. Delete: gone everywhere.
    deleted = api.delete(f"/v1/images/{image['id']}")
    assert deleted.json() == {"id": image["id"], "object": "image", "deleted": True}
    for path in ("", "/download"):
        assert_error(api.get(f"/v1/images/{image['id']}{path}"), 404, "id", "invalid_request_error")
    assert api.get("/v1/images", params={"name": name}).json()["data"] == []
    assert_error(api.delete(f"/v1/images/{image['id']}"), 404, "id", "invalid_request_error")


def test_list_paginates_newest_first(api: httpx.Client) -> None:
    name = f"page-{uuid.uuid4().hex[:8]}"
    made = [imagine(api, name=name, prompt="a dot", size="256x256")["id"] for _ in range(3)]
    first = api.get("/v1/images", params={"name": name, "limit": 2}).json()
    assert [item["id"] for item in first["data"]] == made[::-1][:2] and first["has_more"]
    rest = api.get("/v1/images", params={"name": name, "limit": 2, "after": first["last_id"]})
    assert [item["id"] for item in rest.json()["data"]] == made[:1]
    assert rest.json()["has_more"] is False
    unfiltered = api.get("/v1/images", params={"limit": 100}).json()["data"]
    assert {item["id"] for item in unfiltered} >= set(made)


def test_size_and_format_extensions(api: httpx.Client) -> None:
    image = imagine(api, name="small", prompt="a fox", size="512x512", output_format="webp")
    assert (image["width"], image["height"], image["format"]) == (512, 512, "webp")
    download = api.get(f"/v1/images/{image['id']}/download")
    assert download.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(download.content)).format == "WEBP"


def test_imagine_generates_like_openai_generations(base_url: str, client: openai.OpenAI) -> None:
    """Same model path: an imagine image equals the OpenAI route's image for that seed."""
    with httpx.Client(base_url=base_url, timeout=120) as api:
        image = imagine(api, name="same", prompt="a red boat", seed=4242, model="dall-e-3")
        stored = Image.open(io.BytesIO(api.get(f"/v1/images/{image['id']}/download").content))
    direct = client.images.generate(
        prompt="a red boat", size="1024x1024", extra_body={"seed": 4242}
    )
    assert_close(stored, decode_b64(direct.data[0].b64_json))


@pytest.mark.parametrize(
    "body,status,param",
    [
        ({"prompt": "x"}, 400, "name"),
        ({"name": "", "prompt": "x"}, 400, "name"),
        ({"name": "n"}, 400, "prompt"),
        ({"name": "n", "prompt": "x", "seed": -1}, 400, "seed"),
        ({"name": "n", "prompt": "x", "size": "640x480"}, 400, "size"),
        ({"name": "n", "prompt": "x" * 4001}, 400, "prompt"),
        ({"name": "n", "prompt": "x", "model": "nope"}, 404, "model"),
    ],
)
def test_bad_imagine_requests(http: httpx.Client, body: dict, status: int, param: str) -> None:
    assert_error(http.post("/v1/images/imagine", json=body), status, param, "invalid_request_error")


@pytest.mark.parametrize(
    "query,param",
    [({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "x"}, "limit"),
     ({"after": "nope"}, "after"), ({"after": "image_../../x"}, "after")],
)  # fmt: skip
def test_bad_list_queries(http: httpx.Client, query: dict, param: str) -> None:
    assert_error(http.get("/v1/images", params=query), 400, param, "invalid_request_error")


def test_unknown_and_malformed_ids_are_404(http: httpx.Client) -> None:
    for path in ("/v1/images/image_doesnotexist", "/v1/images/image_x/download"):
        assert_error(http.get(path), 404, "id", "invalid_request_error")
    assert_error(http.post("/v1/images/image_x/publish"), 404, "id", "invalid_request_error")
    assert_error(http.get("/v1/images/public/nope.png"), 404, None, "invalid_request_error")


def test_image_routes_leave_the_other_image_routes_alone(http: httpx.Client) -> None:
    assert_error(http.get("/v1/images/generations"), 405, None, "invalid_request_error")
    assert_error(http.get("/v1/images/nothing"), 404, None, "invalid_request_error")
    assert_error(http.put("/v1/images"), 405, None, "invalid_request_error")
