"""LoRA adapters in each dialect's request shape, and the 400s that name their field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.config import ImageInputConfig
from common.errors import APIError
from common.job import LoraRef
from common.model_config import ModelConfig
from serve_app.dialects import a1111, imagine_api, imagine_sdk, openai, together
from serve_app.dialects.base import Context
from serve_app.dialects.loras import strip_tags
from storage.lora_files import registry_for


def write_adapter(path: Path, rank: int = 4) -> None:
    from safetensors.numpy import save_file

    save_file(
        {
            "unet.x.to_q.lora_A.weight": np.zeros((rank, 8), np.float32),
            "unet.x.to_q.lora_B.weight": np.zeros((8, rank), np.float32),
        },
        str(path),
    )


@pytest.fixture
def model(tmp_path: Path) -> ModelConfig:
    for name in ("style", "ink"):
        write_adapter(tmp_path / f"{name}.safetensors")
    (tmp_path / "big.safetensors").write_bytes(b"\0" * 4096)
    return ModelConfig(
        id="tiny",
        source="builtin:tiny-sdxl",
        loras={"dirs": [str(tmp_path)], "max_per_request": 2, "max_file_bytes": 2048},
    )


def together_job(model: ModelConfig, **body: Any):
    req = together.parse({"prompt": "a cat", "width": 64, "height": 64, **body})
    return together.to_job(req, model, "r")


def test_together_image_loras(model: ModelConfig) -> None:
    job = together_job(model, image_loras=[{"path": "style", "scale": 0.8}])
    assert job.loras == (LoraRef("style", 0.8),)


def test_openai_and_imagine_extension_field(model: ModelConfig) -> None:
    req = openai.parse_generate(
        {"prompt": "x", "loras": [{"name": "ink"}, {"name": "style", "scale": 2}]}
    )
    assert openai.to_job(req, model, "r").loras == (LoraRef("ink", 1.0), LoraRef("style", 2.0))
    assert "loras" not in req.unknown_fields()
    req = imagine_sdk.parse({"prompt": "x", "loras": [{"name": "ink", "scale": 0.5}]})
    assert imagine_sdk.to_job(req, model, "r").loras == (LoraRef("ink", 0.5),)


async def test_imagine_api_passes_loras(model: ModelConfig) -> None:
    ctx = Context(request_id="r", images=ImageInputConfig())
    req = imagine_api.parse_imagine({"name": "n", "prompt": "x", "loras": [{"name": "ink"}]})
    plan = await imagine_api.DIALECT.translate(req, model, ctx)
    assert plan.job.loras == (LoraRef("ink", 1.0),)
    bad = imagine_api.parse_imagine({"name": "n", "prompt": "x", "loras": [{"name": "zz"}]})
    with pytest.raises(APIError) as caught:
        await imagine_api.DIALECT.translate(bad, model, ctx)
    assert caught.value.param == "loras[0].name"


def test_a1111_tags_are_stripped_from_both_prompts(model: ModelConfig) -> None:
    req = a1111.parse(
        {
            "prompt": "a cat <lora:style:0.7>, oil",
            "negative_prompt": "<lora:ink:-0.5> blurry",
            "width": 64,
            "height": 64,
        }
    )
    job = a1111.to_job(req, model, "r")
    assert job.prompt == "a cat , oil"
    assert job.negative_prompt == "blurry"
    assert job.loras == (LoraRef("style", 0.7), LoraRef("ink", -0.5))


def test_a1111_tag_forms() -> None:
    text, tags = strip_tags("<lora:a> x <LORA:b:0.5> <lora:c:0.2:0.9>", "prompt")
    assert text == "x"
    assert [(name, weight) for name, weight, _ in tags] == [("a", 1.0), ("b", 0.5), ("c", 0.9)]
    assert strip_tags("no tags  here", "prompt") == ("no tags  here", [])


@pytest.mark.parametrize(
    "loras,param,code",
    [
        ([{"path": "nope", "scale": 1}], "image_loras[0].path", "lora_not_found"),
        ([{"path": "style", "scale": 1}, {"path": "x"}], "image_loras[1].path", None),
        ([{"path": "style", "scale": 9}], "image_loras[0].scale", "invalid_lora_scale"),
        ([{"path": "style", "scale": "high"}], "image_loras[0].scale", None),
        ([{"scale": 1}], "image_loras[0].path", "missing_required_parameter"),
        ([{"path": "style"}] * 3, "image_loras", "too_many_loras"),
        ([{"path": "big", "scale": 1}], "image_loras[0].path", "lora_too_large"),
        ([{"path": "ftp://example.com/l.safetensors"}], "image_loras[0].path", None),
        ([{"path": "owner/repo/l.safetensors"}], "image_loras[0].path", "lora_hub_disabled"),
        ([{"path": "../etc/passwd"}], "image_loras[0].path", None),
        ("style", "image_loras", None),
    ],
)
def test_together_bad_loras_name_the_field(
    model: ModelConfig, loras: Any, param: str, code: str | None
) -> None:
    with pytest.raises(APIError) as caught:
        together_job(model, image_loras=loras)
    assert caught.value.status == 400
    assert caught.value.param == param
    if code is not None:
        assert caught.value.code == code


def test_a1111_unknown_tag_names_the_tag(model: ModelConfig) -> None:
    req = a1111.parse({"prompt": "x", "negative_prompt": "<lora:gone:1>"})
    with pytest.raises(APIError) as caught:
        a1111.to_job(req, model, "r")
    assert caught.value.param == "negative_prompt"
    assert "<lora:gone:1>" in caught.value.message


def test_disabled_loras_refuse_every_dialect(tmp_path: Path) -> None:
    model = ModelConfig(id="m", source="builtin:tiny-sdxl", loras={"enabled": False})
    with pytest.raises(APIError) as caught:
        openai.to_job(openai.parse_generate({"prompt": "x", "loras": [{"name": "a"}]}), model, "r")
    assert caught.value.code == "lora_disabled"


def test_new_files_are_found_without_a_restart(model: ModelConfig, tmp_path: Path) -> None:
    assert "late" not in registry_for(model).names()
    write_adapter(tmp_path / "late.safetensors", rank=8)
    assert together_job(model, image_loras=[{"path": "late", "scale": 1}]).loras
    info = {i.name: i for i in registry_for(model).listing()}
    assert info["late"].rank == 8 and info["big"].error is not None
