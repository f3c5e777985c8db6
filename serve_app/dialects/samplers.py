"""AUTOMATIC1111 sampler and scheduler names -> diffusers scheduler classes and options.

The table follows diffusers' own A1111 mapping (docs: "Schedulers" overview). Only
samplers with a real diffusers equivalent are listed; anything else (``DPM fast``,
``DPM adaptive``, ``DPM++ 2S a``, ``DPM++ SDE``) is refused with the list of known
names rather than silently replaced. ``DPM++ SDE`` is diffusers'
``DPMSolverSDEScheduler``, which needs torchsde and draws its noise from one Brownian
tree per scheduler seeded by a config value, not by each image's seed: it would break
"the same seed gives the same image, alone or in a batch", so it is left out. Pure data: nothing
here imports diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import invalid
from common.job import SchedulerSpec


@dataclass(frozen=True)
class Sampler:
    name: str
    class_name: str
    options: dict[str, bool | int | float | str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    # Does the class take use_karras_sigmas / use_exponential_sigmas / timestep_spacing?
    sigma_schedules: bool = True
    timestep_spacing: bool = True


_SDE = {"algorithm_type": "sde-dpmsolver++"}
_SAMPLER_LIST = [
    Sampler("Euler", "EulerDiscreteScheduler", aliases=("k_euler",)),
    Sampler(
        "Euler a", "EulerAncestralDiscreteScheduler", aliases=("k_euler_a",), sigma_schedules=False
    ),
    Sampler("LMS", "LMSDiscreteScheduler", aliases=("k_lms",)),
    Sampler("Heun", "HeunDiscreteScheduler", aliases=("k_heun",)),
    Sampler("DPM2", "KDPM2DiscreteScheduler", aliases=("k_dpm_2",)),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", aliases=("k_dpm_2_a",)),
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", aliases=("k_dpmpp_2m",)),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", _SDE, aliases=("k_dpmpp_2m_sde",)),
    Sampler("DDIM", "DDIMScheduler", aliases=("ddim",), sigma_schedules=False),
    Sampler(
        "PLMS",
        "PNDMScheduler",
        {"skip_prk_steps": True},
        aliases=("plms",),
        sigma_schedules=False,
    ),
    Sampler("UniPC", "UniPCMultistepScheduler", aliases=("unipc",)),
    # Latent consistency sampling: meant for LCM-distilled weights (few steps, low CFG).
    Sampler("LCM", "LCMScheduler", aliases=("lcm",), sigma_schedules=False),
]
SAMPLERS: dict[str, Sampler] = {s.name: s for s in _SAMPLER_LIST}
DEFAULT_SAMPLER = "Euler"

# A1111 1.9+ sends the sigma schedule separately; older names carry it as a suffix.
SCHEDULE_LABELS = {
    "automatic": "Automatic",
    "uniform": "Uniform",
    "karras": "Karras",
    "exponential": "Exponential",
    "sgm_uniform": "SGM Uniform",
    "simple": "Simple",
    "normal": "Normal",
    "beta": "Beta",
}
# "Simple" takes every n-th sigma of the model's table counting from the end, which is
# diffusers' trailing spacing (as SGM Uniform); "Normal" spaces timesteps linearly over
# the whole range (linspace); "Beta" is diffusers' use_beta_sigmas (needs scipy).
_SCHEDULE_OPTIONS: dict[str, dict[str, bool | int | float | str]] = {
    "automatic": {},
    "uniform": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "sgm_uniform": {"timestep_spacing": "trailing"},
    "simple": {"timestep_spacing": "trailing"},
    "normal": {"timestep_spacing": "linspace"},
    "beta": {"use_beta_sigmas": True},
}
_SUFFIXES = {" karras": "karras", " exponential": "exponential"}


def _lookup_sampler(name: str) -> tuple[Sampler, str | None]:
    key = name.strip().lower()
    for sampler in _SAMPLER_LIST:
        if key == sampler.name.lower() or key in sampler.aliases:
            return sampler, None
    for suffix, schedule in _SUFFIXES.items():
        if key.endswith(suffix):
            sampler, _ = _lookup_sampler(key.removesuffix(suffix))
            return sampler, schedule
    raise KeyError(name)


def _lookup_schedule(name: str) -> str:
    key = name.strip().lower().replace(" ", "_")
    if key in SCHEDULE_LABELS:
        return key
    raise KeyError(name)


def known_sampler_names() -> list[str]:
    names = []
    for sampler in _SAMPLER_LIST:
        names.append(sampler.name)
        if sampler.sigma_schedules:
            names += [f"{sampler.name} Karras", f"{sampler.name} Exponential"]
    return names


def resolve_sampler(
    sampler_name: str | None, scheduler: str | None, param: str = "sampler_name"
) -> SchedulerSpec | None:
    """A1111 ``sampler_name`` (+ ``scheduler``) -> a scheduler swap, or a 400 listing names.

    ``None`` for both means the model's configured scheduler. ``param`` names the field
    in the error (the OpenAI dialect's extension is ``sampler``).
    """
    if sampler_name is None and scheduler in (None, "", "Automatic", "automatic"):
        return None
    try:
        sampler, suffix_schedule = _lookup_sampler(sampler_name or DEFAULT_SAMPLER)
    except KeyError:
        raise invalid(
            f"Unknown sampler_name {sampler_name!r}. Known samplers: "
            f"{', '.join(known_sampler_names())}.",
            param=param,
            code="unknown_sampler",
        ) from None
    try:
        schedule = _lookup_schedule(scheduler) if scheduler else (suffix_schedule or "automatic")
    except KeyError:
        raise invalid(
            f"Unknown scheduler {scheduler!r}. Known schedulers: "
            f"{', '.join(SCHEDULE_LABELS.values())}.",
            param="scheduler",
            code="unknown_scheduler",
        ) from None
    options = dict(sampler.options)
    extra = _SCHEDULE_OPTIONS[schedule]
    needs = "timestep_spacing" if "timestep_spacing" in extra else "sigma_schedules"
    if extra and not getattr(sampler, needs):
        raise invalid(
            f"Sampler {sampler.name!r} has no {SCHEDULE_LABELS[schedule]!r} schedule in "
            "diffusers; use scheduler 'Automatic' or another sampler.",
            param="scheduler",
            code="unsupported_value",
        )
    options.update(extra)
    return SchedulerSpec(sampler.class_name, tuple(sorted(options.items())))


def sampler_names() -> list[str]:
    """The base sampler names (without schedule suffixes), as a model card lists them."""
    return [s.name for s in _SAMPLER_LIST]


def sampler_items(flow_matching: bool = False) -> list[dict[str, object]]:
    """``GET /sdapi/v1/samplers``: ``[{name, aliases, options}]`` as A1111 lists them; for
    a flow-matching model (FLUX, Qwen-Image) only ``Euler``, its flow-matching sampler."""
    return [
        {"name": s.name, "aliases": list(s.aliases), "options": {"diffusers": s.class_name}}
        for s in _SAMPLER_LIST
        if not flow_matching or s.name == "Euler"
    ]


def scheduler_items(flow_matching: bool = False) -> list[dict[str, object]]:
    """``GET /sdapi/v1/schedulers``: ``[{name, label, aliases, default_rho, need_inner_model}]``;
    a flow-matching model has only its own schedule (``Automatic``)."""
    return [
        {"name": n, "label": label, "aliases": None, "default_rho": None, "need_inner_model": None}
        for n, label in SCHEDULE_LABELS.items()
        if not flow_matching or n == "automatic"
    ]


def spec_labels(spec: SchedulerSpec | None) -> tuple[str, str]:
    """(A1111 sampler name, schedule label) of a scheduler swap, for infotexts;
    ``None`` (the model's own scheduler) is ``("Default", "Automatic")``."""
    if spec is None:
        return "Default", SCHEDULE_LABELS["automatic"]
    options = spec.config()
    schedule = next(
        (
            key
            for key, extra in _SCHEDULE_OPTIONS.items()
            if extra and all(options.get(k) == v for k, v in extra.items())
        ),
        "automatic",
    )
    matches = [
        sampler
        for sampler in _SAMPLER_LIST
        if sampler.class_name == spec.class_name
        and all(options.get(k) == v for k, v in sampler.options.items())
    ]
    # The most specific match: "DPM++ 2M SDE" over "DPM++ 2M".
    best = max(matches, key=lambda sampler: len(sampler.options), default=None)
    return (best.name if best else spec.class_name), SCHEDULE_LABELS[schedule]
