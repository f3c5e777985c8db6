"""Prometheus metrics through Ray Serve's metrics API, per model.

Ray exports them on each node's metrics endpoint with the ``ray_`` prefix, and adds
the ``deployment``, ``replica`` and ``application`` tags itself. Names and meaning:

| metric | type | tags | meaning |
|---|---|---|---|
| ``ray_imagegen_images_generated_total`` | counter | model | images finished by the pipeline |
| ``ray_imagegen_batch_images`` | histogram | model | images per batch (``@serve.batch``) |
| ``ray_imagegen_queue_wait_ms`` | histogram | model | arrival to batch start (step: admission) |
| ``ray_imagegen_generation_ms`` | histogram | model | one pipeline call (one shape group) |
| ``ray_imagegen_cancelled_images_total`` | counter | model | images removed from a running call |
| ``ray_imagegen_rows_per_unet_call`` | histogram | model | step mode: rows in one denoiser call |
| ``ray_imagegen_step_queue_depth`` | gauge | model | step mode: requests waiting for admission |
| ``ray_imagegen_class_queue_wait_ms`` | histogram | model, priority | arrival to admission |
| ``ray_imagegen_class_latency_ms`` | histogram | model, priority | arrival to final images |
| ``ray_imagegen_preemptions_total`` | counter | model | batch requests paused |
| ``ray_imagegen_paused_rows`` | gauge | model | step mode: rows paused right now |
| ``ray_imagegen_deadline_refusals_total`` | counter | model | refused: deadline out of reach |
| ``ray_imagegen_lora_load_ms`` | histogram | model | loading a LoRA adapter on first use |
| ``ray_imagegen_encode_ms`` | histogram | format | encoding one request's images |

Outside a Serve replica (unit tests) Ray's metric objects record nothing.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

MS_BUCKETS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64]


class ModelMetrics:
    """The model deployment's metrics, tagged with its model id."""

    def __init__(self, model_id: str) -> None:
        tags = {"model": model_id}
        self.images = Counter(
            "imagegen_images_generated_total",
            description="Images finished by the pipeline.",
            tag_keys=("model",),
        )
        self.batch_images = Histogram(
            "imagegen_batch_images",
            description="Images per batch formed by @serve.batch.",
            boundaries=BATCH_BUCKETS,
            tag_keys=("model",),
        )
        self.queue_wait_ms = Histogram(
            "imagegen_queue_wait_ms",
            description="From a request reaching the replica to its batch starting, in ms.",
            boundaries=MS_BUCKETS,
            tag_keys=("model",),
        )
        self.generation_ms = Histogram(
            "imagegen_generation_ms",
            description="One pipeline call (one shape group of a batch), in ms.",
            boundaries=MS_BUCKETS,
            tag_keys=("model",),
        )
        self.cancelled_images = Counter(
            "imagegen_cancelled_images_total",
            description="Images of cancelled requests removed from a running pipeline call.",
            tag_keys=("model",),
        )
        self.rows_per_unet_call = Histogram(
            "imagegen_rows_per_unet_call",
            description="Step mode: image rows sharing one UNet call.",
            boundaries=BATCH_BUCKETS,
            tag_keys=("model",),
        )
        self.step_queue_depth = Gauge(
            "imagegen_step_queue_depth",
            description="Step mode: requests waiting for admission at the next step boundary.",
            tag_keys=("model",),
        )
        self.lora_load_ms = Histogram(
            "imagegen_lora_load_ms",
            description="Loading a LoRA adapter on first use (read, convert, to device), in ms.",
            boundaries=MS_BUCKETS,
            tag_keys=("model",),
        )
        self.class_queue_wait_ms = Histogram(
            "imagegen_class_queue_wait_ms",
            description="Step mode: from arrival to first admission, per priority class, in ms.",
            boundaries=MS_BUCKETS,
            tag_keys=("model", "priority"),
        )
        self.class_latency_ms = Histogram(
            "imagegen_class_latency_ms",
            description="Step mode: from arrival to the final images, per priority class, in ms.",
            boundaries=MS_BUCKETS,
            tag_keys=("model", "priority"),
        )
        self.preemptions = Counter(
            "imagegen_preemptions_total",
            description="Step mode: batch requests paused at a step boundary for interactive work.",
            tag_keys=("model",),
        )
        self.paused_rows = Gauge(
            "imagegen_paused_rows",
            description="Step mode: image rows paused right now.",
            tag_keys=("model",),
        )
        self.deadline_refusals = Counter(
            "imagegen_deadline_refusals_total",
            description="Step mode: requests refused because their deadline was out of reach.",
            tag_keys=("model",),
        )
        for metric in (
            self.class_queue_wait_ms,
            self.class_latency_ms,
            self.preemptions,
            self.paused_rows,
            self.deadline_refusals,
            self.lora_load_ms,
            self.rows_per_unet_call,
            self.step_queue_depth,
            self.images,
            self.batch_images,
            self.queue_wait_ms,
            self.generation_ms,
            self.cancelled_images,
        ):
            # A fresh dict each time: Serve adds its own tags to the dict it is given.
            metric.set_default_tags(dict(tags))


class EncoderMetrics:
    def __init__(self) -> None:
        self.encode_ms = Histogram(
            "imagegen_encode_ms",
            description="Encoding one request's images (resize, format, b64 or store), in ms.",
            boundaries=MS_BUCKETS,
            tag_keys=("format",),
        )
