"""One diagnostics round over an MQTT-SN device session: poll, answer, report (the asyncio driver of
:mod:`firmware_proto.diagnostics`; a node calls it on its check-in schedule)."""

from __future__ import annotations

import time
from collections.abc import Callable

from firmware_proto.aio.device_mqttsn import MqttSnDevice
from firmware_proto.diagnostics import Diagnostics, RebootRequested

__all__ = ["diagnostics_round"]


async def diagnostics_round(
    device: MqttSnDevice, diag: Diagnostics, clock: Callable[[], float] = time.monotonic
) -> list[RebootRequested]:
    """Fetch the next command, answer it; the reboot (if any) is the caller's to do."""
    poll = diag.poll()
    reply = await device.request(poll.method, poll.path)
    answer = diag.on_next(reply.status, reply.body, clock())
    if answer is None:
        return []
    done = await device.request(
        answer.method, answer.path, body=answer.body or b"", content_type="application/json"
    )
    return diag.on_answered(answer.path.rsplit("/", 1)[1], done.status)
