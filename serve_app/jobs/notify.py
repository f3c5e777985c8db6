"""A job's webhook events, delivered and recorded on the job.

Every attempt is appended to the stored record's ``webhook_attempts`` by a
conditional read-modify-write (``JobStore.update``), so attempts recorded by several
replicas (a job taken over while its first replica still retries a delivery) are all
kept, and the replica holding the job never overwrites them: its own writes apply
only its own fields on top of what is stored.

The ``webhook-id`` is ``msg_<job id>_<event>`` on every attempt and every run of the
job, so a receiver that deduplicates sees each event once even when a job that was
taken over completes twice.
"""

from __future__ import annotations

import asyncio
import logging

from serve_app.jobs.webhooks import WebhookSender
from storage.jobs import JobRecord, JobStore, WebhookAttempt

logger = logging.getLogger("imagegen.jobs")


def message_id(job_id: str, event: str) -> str:
    return f"msg_{job_id}_{event}"


class Notifier:
    """Sends ``started`` and ``completed`` for the jobs that asked for them."""

    def __init__(self, jobs: JobStore, webhooks: WebhookSender | None) -> None:
        self.jobs = jobs
        self.webhooks = webhooks

    async def notify(self, record: JobRecord, event: str) -> None:
        if self.webhooks is None or record.webhook_url is None:
            return
        if event not in record.webhook_events:
            return

        async def on_attempt(attempt: WebhookAttempt) -> None:
            def append(fresh: JobRecord) -> JobRecord:
                return fresh.model_copy(
                    update={"webhook_attempts": [*fresh.webhook_attempts, attempt]}
                )

            try:
                await asyncio.to_thread(self.jobs.update, record.owner, record.id, append)
            except Exception:  # noqa: BLE001 - the delivery itself went ahead
                logger.warning("job %s: recording a webhook attempt failed", record.id)

        try:
            await self.webhooks.deliver(
                record.webhook_url,
                event,
                record.public(),
                message_id(record.id, event),
                on_attempt,
            )
        except Exception:  # noqa: BLE001 - recorded in the log; the job itself is done
            logger.warning("job %s: webhook %s failed", record.id, event, exc_info=True)
