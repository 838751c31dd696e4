"""The site's ClientApp.

In deployment every message starts a fresh ClientApp process, and three of the four messages of
a secure round are SecAgg+ key exchange that never reaches a handler. So this module imports
only Flower and the secure-aggregation mod; torch, the model and the data layer
(``client.site_work``) are imported when a handler first runs.
"""

from __future__ import annotations

import logging

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedneuro.federation.secure_client import secure_aggregation_mod
from fedneuro.logs import configure_from_env

# Flower's SecAgg+ mod logs every protocol stage at DEBUG on every site; keep site logs readable.
logging.getLogger("flwr").setLevel(logging.INFO)
# In deployment, `fedneuro site start --log-format` reaches this process through the environment.
configure_from_env()

app = ClientApp(mods=[secure_aggregation_mod])


@app.train()
def train(msg: Message, context: Context) -> Message:
    from client import site_work  # noqa: PLC0415 - heavy imports only when there is work

    return site_work.train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    from client import site_work  # noqa: PLC0415

    return site_work.evaluate(msg, context)
