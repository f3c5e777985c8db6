"""The per-hop profile's bookkeeping: which process is which hop, what a stack is spent on."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from benchmarks.hop_profile import categories, category, hop_of, read_stacks, write_svg


def test_processes_are_put_in_their_hops_by_title() -> None:
    assert hop_of("ray::ProxyActor") == "proxy"
    assert hop_of("ray::ServeReplica:imagegen:Ingress") == "ingress"
    assert hop_of("ray::ServeReplica:imagegen:Model:tiny-sdxl") == "model"
    assert hop_of("ray::ServeReplica:imagegen:Encoder.handle") == "encoder"
    assert hop_of("/venv/lib/ray/core/src/ray/raylet/raylet --node") == "ray core"
    assert hop_of("ray::ServeController") == "ray core"


def test_a_stack_is_named_by_the_first_category_it_reaches() -> None:
    loop = "_drive (/w/deployments/model/scheduler/step_loop.py:130)"
    unet = "forward (/v/site-packages/diffusers/models/unets/unet_2d_condition.py:1000)"
    step = "step (/v/site-packages/diffusers/schedulers/scheduling_euler_discrete.py:600)"
    vae = "decode (diffusers/models/autoencoders/autoencoder_kl.py:235)"  # relative, as py-spy
    assert category(f"{loop};{unet}") == "torch: denoiser"
    assert category(f"{loop};{vae};forward (torch/nn/modules/conv.py:1)") == "torch: VAE decode"
    assert category("_remote (ray/actor.py:1178)") == "Ray core (Python)"
    assert category("handle (ray/serve/_private/replica.py:1)") == "Ray Serve"
    assert category(f"{loop};{step}") == "scheduler steps"
    assert category(loop) == "step loop + families"
    assert category("run (/usr/lib/python3.11/asyncio/events.py:80)") == "asyncio"
    assert category("main (x.py:1)") == "other Python"


def test_collapsed_stacks_are_read_counted_and_drawn(tmp_path: Path) -> None:
    raw = tmp_path / "model.txt"
    raw.write_text(
        "a (/w/deployments/model/families/sdxl/family.py:1);b (/v/torch/nn/modules/x.py:2) 30\n"
        "a (/w/deployments/model/families/sdxl/family.py:1) 10\n"
    )
    stacks = read_stacks(raw)
    assert sum(stacks.values()) == 40
    assert categories(stacks) == {"torch: denoiser": 30, "step loop + families": 10}
    svg = tmp_path / "model.svg"
    write_svg(stacks, svg, "model")
    text = svg.read_text()
    assert text.startswith("<svg") and "40 samples" in text and text.count("<rect") == 2
    write_svg(Counter(), tmp_path / "empty.svg", "none")
    assert not (tmp_path / "empty.svg").exists()
