"""The topic names and ids a client session knows: predefined, short, registered."""

from __future__ import annotations

from collections.abc import Mapping

from ._errors import LocalProtocolError
from ._packets import TopicIdType, short_topic_id, short_topic_name

__all__ = ["RESERVED_TOPIC_IDS", "TopicTable", "check_topic_name"]

RESERVED_TOPIC_IDS = (0x0000, 0xFFFF)


def check_topic_name(topic: str) -> None:
    """A topic name we may publish to or REGISTER: non-empty, no wildcards."""
    if not isinstance(topic, str) or not topic:
        raise LocalProtocolError("a topic name must be a non-empty str")
    if "#" in topic or "+" in topic:
        raise LocalProtocolError(f"wildcards are not allowed in a topic name: {topic!r}")
    try:
        topic.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError("topic name is not encodable as UTF-8") from exc


class TopicTable:
    """Predefined ids (fixed) plus the normal ids learnt in this session.

    Own REGISTERs fill both directions; gateway REGISTERs and SUBACKs fill only id -> name,
    which is what inbound PUBLISHes need.
    """

    def __init__(self, predefined: Mapping[str, int] | None) -> None:
        self.predefined: dict[str, int] = dict(predefined or {})
        for name, tid in self.predefined.items():
            if isinstance(tid, bool) or not isinstance(tid, int) or not 0 < tid < 0xFFFF:
                raise LocalProtocolError(f"predefined topic id for {name!r} must be 1..65534")
        self._predefined_names = {tid: name for name, tid in self.predefined.items()}
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}

    def clear(self) -> None:
        """Forget the session's normal ids (a clean session starts without them)."""
        self._ids.clear()
        self._names.clear()

    def reference(self, topic: str | int, short: bool) -> tuple[TopicIdType, str | int]:
        """How a command's topic argument goes on the wire.

        int -> predefined id; ``short`` -> the 2-char name; a name in the predefined map -> its
        id; anything else is a normal topic name (or filter).
        """
        if isinstance(topic, bool) or not isinstance(topic, str | int):
            raise LocalProtocolError(f"topic must be str or int, got {type(topic).__name__}")
        if isinstance(topic, int):
            if not 0 < topic < 0xFFFF:
                raise LocalProtocolError(f"predefined topic id must be 1..65534, got {topic}")
            return TopicIdType.PREDEFINED, topic
        if short:
            short_topic_id(topic)  # validates: exactly 2 bytes
            return TopicIdType.SHORT, topic
        if topic in self.predefined:
            return TopicIdType.PREDEFINED, self.predefined[topic]
        return TopicIdType.NORMAL, topic

    def registered(self, name: str) -> int | None:
        return self._ids.get(name)

    def learn_own(self, name: str, topic_id: int) -> None:
        self._ids[name] = topic_id
        self._names[topic_id] = name

    def learn_inbound(self, topic_id: int, name: str) -> None:
        self._names[topic_id] = name

    def forget_id(self, topic_id: int) -> None:
        """The gateway said INVALID_TOPIC_ID: the next publish to that name re-REGISTERs."""
        for name in [n for n, tid in self._ids.items() if tid == topic_id]:
            del self._ids[name]

    def resolve(self, topic_id: int, kind: TopicIdType) -> str | None:
        """The topic name of an inbound PUBLISH, or None when this session does not know it."""
        if kind == TopicIdType.SHORT:
            try:
                return short_topic_name(topic_id)
            except UnicodeDecodeError:
                return None
        if kind == TopicIdType.PREDEFINED:
            return self._predefined_names.get(topic_id)
        return self._names.get(topic_id)
