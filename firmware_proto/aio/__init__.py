"""asyncio drivers of the node's sans-I/O cores: sockets, timers and tasks, no protocol logic."""
