"""Just enough of Flower's Grid to run the real ClientApp in-process (no Ray, no network)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from pathlib import Path

from flwr.app import Context, Message, RecordDict

from client.app import app as client_app


class InProcessGrid:
    """Each node id is one site's ClientApp, called directly, with a Context that persists
    across messages the way a SuperNode keeps it (SecAgg+ keeps its state there).

    ``drop(node, message) -> bool`` makes a node silent for that message (a site that is gone);
    ``tamper(node, reply)`` may alter a reply on its way back.
    """

    def __init__(
        self,
        site_configs: dict[int, Path],
        *,
        drop: Callable[[int, Message], bool] | None = None,
        tamper: Callable[[int, Message], None] | None = None,
    ) -> None:
        self.site_configs, self._drop, self._tamper = site_configs, drop, tamper
        self.replies: list[list[Message]] = []
        self.contexts = {
            node: Context(run_id=1, node_id=node, node_config={"site-config": str(path)}, state=RecordDict(), run_config={})
            for node, path in site_configs.items()
        }

    def get_node_ids(self) -> Iterable[int]:
        return list(self.site_configs)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            if self._drop is not None and self._drop(node, message):
                continue
            # A copy, as the wire would deliver: Flower's SecAgg+ sends one content object to
            # every node and its client mod pops keys from what it receives.
            reply = client_app(copy.deepcopy(message), self.contexts[node])
            if self._tamper is not None:
                self._tamper(node, reply)
            replies.append(reply)
        self.replies.append(replies)
        return replies
