"""The stop-and-wait request queue of a client session and its message ids."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from ._errors import LocalProtocolError
from ._packets import Packet, TopicIdType

__all__ = ["Request", "RequestKind", "RequestQueue"]


class RequestKind(Enum):
    CONNECT = "CONNECT"
    REGISTER = "REGISTER"
    PUBLISH = "PUBLISH"
    PUBREL = "PUBREL"
    SUBSCRIBE = "SUBSCRIBE"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    PINGREQ = "PINGREQ"
    DISCONNECT = "DISCONNECT"
    WILLTOPICUPD = "WILLTOPICUPD"
    WILLMSGUPD = "WILLMSGUPD"


@dataclass(slots=True)
class Request:
    kind: RequestKind
    packet: Packet | None  # None: a PUBLISH whose topic id is resolved when it reaches the head
    msg_id: int = 0
    topic: str | int = ""  # name, filter or id as the caller gave it (an int id for a PUBLISH)
    topic_id_type: TopicIdType = TopicIdType.NORMAL
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    auto: bool = False  # a REGISTER inserted in front of a PUBLISH with an unregistered topic
    sends: int = 0
    deadline: float | None = None  # set while in flight


class RequestQueue:
    """Requests in call order; only the head is ever in flight."""

    def __init__(self) -> None:
        self._items: deque[Request] = deque()
        self._ids_in_use: set[int] = set()
        self._next_msg_id = 1

    def __len__(self) -> int:
        return len(self._items)

    @property
    def head(self) -> Request | None:
        return self._items[0] if self._items else None

    def alloc_msg_id(self) -> int:
        """The next free id in 1..65535, wrapping and skipping ids still queued."""
        if len(self._ids_in_use) >= 0xFFFF:
            raise LocalProtocolError("all 65535 message ids are in use")
        mid = self._next_msg_id
        while mid in self._ids_in_use:
            mid = mid % 0xFFFF + 1
        self._next_msg_id = mid % 0xFFFF + 1
        self._ids_in_use.add(mid)
        return mid

    def release(self, msg_id: int) -> None:
        """Give back an id allocated for a request that was never queued."""
        self._ids_in_use.discard(msg_id)

    def append(self, req: Request) -> None:
        self._items.append(req)

    def push_front(self, req: Request) -> None:
        self._items.appendleft(req)

    def pop_head(self) -> Request:
        req = self._items.popleft()
        if req.msg_id:
            self._ids_in_use.discard(req.msg_id)
        return req

    def clear(self) -> None:
        self._items.clear()
        self._ids_in_use.clear()

    def in_flight(self, kind: RequestKind, msg_id: int | None = None) -> Request | None:
        """The head if it is in flight, of this kind and (when given) with this msg id."""
        head = self.head
        if head is None or head.deadline is None or head.kind is not kind:
            return None
        if msg_id is not None and head.msg_id != msg_id:
            return None
        return head
