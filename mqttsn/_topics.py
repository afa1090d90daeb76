"""Topic names, filters, predefined topic tables and per-session topic id registries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ._errors import LocalProtocolError

__all__ = [
    "PredefinedTopics",
    "TopicRegistry",
    "is_wildcard",
    "topic_matches",
    "validate_filter",
    "validate_topic_name",
]


def is_wildcard(topic: str) -> bool:
    return "+" in topic or "#" in topic


def validate_topic_name(name: str) -> str | None:
    """Return why ``name`` is not a valid MQTT topic name to publish to, or None."""
    if not name:
        return "empty topic name"
    if is_wildcard(name):
        return "wildcards are not allowed in a topic name"
    if "\x00" in name:
        return "NUL in topic name"
    if len(name.encode("utf-8")) > 0xFFFF:
        return "topic name too long"
    return None


def validate_filter(topic_filter: str) -> str | None:
    """Return why ``topic_filter`` is not a valid MQTT topic filter, or None."""
    if not topic_filter:
        return "empty topic filter"
    if "\x00" in topic_filter:
        return "NUL in topic filter"
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be a whole last level"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 §4.7 matching, including the rule that wildcards skip ``$`` topics."""
    if topic_filter == topic:
        return True
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


@dataclass(frozen=True, slots=True)
class PredefinedTopic:
    client_id: str  # "*" for every client
    topic: str
    topic_id: int


class PredefinedTopics:
    """Predefined topic ids agreed out of band (gateway config + firmware).

    File format (the Eclipse Paho MQTT-SN gateway's): one entry per line,
    ``ClientId, topic name, id`` where ClientId ``*`` applies to every client; ``#`` starts a
    comment. A client-specific entry wins over a ``*`` entry with the same id or name.
    """

    def __init__(self, entries: Iterable[PredefinedTopic] = ()) -> None:
        self._by_id: dict[tuple[str, int], str] = {}
        self._by_name: dict[tuple[str, str], int] = {}
        for e in entries:
            self.add(e.client_id, e.topic, e.topic_id)

    def add(self, client_id: str, topic: str, topic_id: int) -> None:
        if not 1 <= topic_id <= 0xFFFE:
            raise LocalProtocolError(f"predefined topic id must be 1..65534, got {topic_id}")
        why = validate_topic_name(topic)
        if why:
            raise LocalProtocolError(f"predefined topic {topic!r}: {why}")
        if (client_id, topic_id) in self._by_id:
            raise LocalProtocolError(f"predefined topic id {topic_id} defined twice for {client_id!r}")
        self._by_id[(client_id, topic_id)] = topic
        self._by_name.setdefault((client_id, topic), topic_id)

    @classmethod
    def parse(cls, text: str, source: str = "<predefined topics>") -> PredefinedTopics:
        table = cls()
        for lineno, raw in enumerate(text.splitlines(), 1):
            # '#' cannot appear in a topic name, so it always starts a comment here.
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 3:
                raise LocalProtocolError(
                    f"{source}:{lineno}: expected 'ClientId, topic, id', got {raw.strip()!r}"
                )
            client_id, topic, id_text = parts
            if not client_id:
                raise LocalProtocolError(f"{source}:{lineno}: empty client id (use '*' for all)")
            try:
                topic_id = int(id_text, 0)
            except ValueError:
                raise LocalProtocolError(f"{source}:{lineno}: topic id {id_text!r} is not a number") from None
            try:
                table.add(client_id, topic, topic_id)
            except LocalProtocolError as exc:
                raise LocalProtocolError(f"{source}:{lineno}: {exc}") from None
        return table

    def name_for(self, client_id: str | None, topic_id: int) -> str | None:
        if client_id is not None:
            name = self._by_id.get((client_id, topic_id))
            if name is not None:
                return name
        return self._by_id.get(("*", topic_id))

    def id_for(self, client_id: str | None, topic: str) -> int | None:
        if client_id is not None:
            tid = self._by_name.get((client_id, topic))
            if tid is not None:
                return tid
        return self._by_name.get(("*", topic))

    def __iter__(self) -> Iterator[PredefinedTopic]:
        for (client_id, tid), topic in sorted(self._by_id.items()):
            yield PredefinedTopic(client_id, topic, tid)

    def __len__(self) -> int:
        return len(self._by_id)


class TopicRegistry:
    """Normal topic ids of one session: both directions share one id space, as in Paho."""

    __slots__ = ("_by_id", "_by_name", "_next", "limit")

    def __init__(self, limit: int = 1000) -> None:
        self._by_id: dict[int, str] = {}
        self._by_name: dict[str, int] = {}
        self._next = 1
        self.limit = limit

    def id_for(self, name: str) -> int | None:
        return self._by_name.get(name)

    def name_for(self, topic_id: int) -> str | None:
        return self._by_id.get(topic_id)

    def assign(self, name: str) -> int | None:
        """The id of ``name``, assigning a new one; None when the table is full."""
        tid = self._by_name.get(name)
        if tid is not None:
            return tid
        if len(self._by_id) >= self.limit:
            return None
        while self._next in self._by_id or self._next in (0x0000, 0xFFFF):
            self._next = self._next % 0xFFFE + 1
        tid = self._next
        self._next = self._next % 0xFFFE + 1
        self._by_id[tid] = name
        self._by_name[name] = tid
        return tid

    def clear(self) -> None:
        self._by_id.clear()
        self._by_name.clear()
        self._next = 1

    def __len__(self) -> int:
        return len(self._by_id)
