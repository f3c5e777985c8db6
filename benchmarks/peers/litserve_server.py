"""The peer: a LitServe server on this project's weights, batching as LitServe's docs show.

It loads the model through the project's own family loader (same weights, scheduler,
dtype and torch threads as a replica), batches requests with
``LitAPI(max_batch_size=8, batch_timeout=0.1)`` (LitServe 0.2.19's place for them;
its ``LitServer(api, max_batch_size=..., batch_timeout=...)`` form is deprecated),
runs one pipeline call per batch, and answers on our route with our response shape:
the image as a base64 PNG encoded by our own encoder function, so a client does the
same work against either server. (No ``from __future__ import annotations``: LitServe
reads ``decode_request``'s annotation as the request body type at run time.)

    python -m benchmarks.peers.litserve_server --port 8790 --size 64x64
"""

import argparse
import base64
import random
from pathlib import Path
from typing import Any

import litserve as ls

from benchmarks.raw_pipeline import guidance_kwargs
from benchmarks.server import ROOT, model_config
from common.model_config import ModelConfig
from deployments.encoder.codec import encode_image
from deployments.model.families.loading import to_uint8

ROUTE = "/v1/images/generations"


class ImageAPI(ls.LitAPI):  # type: ignore[misc]
    """The family's diffusers pipeline behind LitServe's decode/batch/predict/unbatch/encode."""

    def __init__(self, model: dict[str, Any], width: int, height: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model, self.width, self.height = model, width, height

    def setup(self, device: str) -> None:
        from deployments.model.families.registry import load_family

        config = ModelConfig.model_validate({**self.model, "warmup": False})
        self.config = config
        self.family = load_family(config)
        self.extra = guidance_kwargs(self.family, config.default_guidance)

    def decode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        seed = request.get("seed")
        return {
            "prompt": str(request.get("prompt", "")),
            "seed": int(seed) if seed is not None else random.randrange(2**31),
            "steps": int(request.get("num_inference_steps", self.config.default_steps)),
        }

    def batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return inputs

    def predict(self, inputs: list[dict[str, Any]]) -> list[Any]:
        import torch

        self.family.pin_threads()
        with torch.inference_mode():
            images = self.family.pipe(
                prompt=[x["prompt"] for x in inputs],
                width=self.width,
                height=self.height,
                num_inference_steps=inputs[0]["steps"],
                generator=[torch.Generator("cpu").manual_seed(x["seed"]) for x in inputs],
                output_type="np",
                **self.extra,
            ).images
        return list(to_uint8(images)[0])

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def encode_response(self, output: Any) -> dict[str, Any]:
        png = encode_image(output, self.width, self.height, "png", None)
        return {"data": [{"b64_json": base64.b64encode(png).decode("ascii")}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    parser.add_argument("--model", default=None, help="model id or alias (default: the first)")
    parser.add_argument("--size", default="64x64", help="the generation size, WxH")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: config)")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    model = model_config(args.config, args.model)
    if args.threads is not None:
        model = {**model, "torch_threads": args.threads}
    api = ImageAPI(
        model,
        width,
        height,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
        api_path=ROUTE,
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=600)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
