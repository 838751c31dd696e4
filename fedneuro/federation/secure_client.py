"""The site's half of secure aggregation (Flower's SecAgg+).

Flower 1.42's SecAgg+ client mod speaks the legacy FitIns/FitRes record format at its masking
stage (behind a Message-API handler that replies with plain ``arrays`` it fails with
``KeyError: 'fitres.parameters'``). So the site's train handler recognises a secure round by the
legacy ``fitins.*`` records, trains as usual, and answers with a ``fitres.*`` reply holding its
clipped *update* (not its weights); the mod then masks that update and deletes the plain copy
before anything leaves the site.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from fedneuro.federation.codec import decode_ordered, encode_ordered
from fedneuro.models.manifest import TensorManifest

FIT_INS_ARRAYS = "fitins.parameters"
FIT_INS_CONFIG = "fitins.config"


def secure_aggregation_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """SecAgg+ for train messages that carry its stage configuration; everything else passes
    through untouched (Flower's mod alone would fail on a plain train message)."""
    if msg.metadata.message_type == MessageType.TRAIN and RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


def is_secure_round(msg: Message) -> bool:
    return FIT_INS_ARRAYS in msg.content.array_records


def secure_round_config(msg: Message) -> dict[str, object]:
    return dict(msg.content.config_records[FIT_INS_CONFIG])


def secure_round_global_state(msg: Message, manifest: TensorManifest) -> dict[str, np.ndarray]:
    parameters = compat.arrayrecord_to_parameters(msg.content.array_records[FIT_INS_ARRAYS], keep_input=True)
    return decode_ordered(parameters_to_ndarrays(parameters), manifest, source="global model (secure round)")


def clip_update(update: Mapping[str, np.ndarray], max_norm: float) -> tuple[dict[str, np.ndarray], float]:
    """Scale ``update`` to L2 norm ≤ ``max_norm`` over all tensors; return it and its norm before.

    The coordinator cannot check an update it cannot see, so the bound is enforced here.
    """
    norm = float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in update.values())))
    scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
    return {k: (v * scale).astype(v.dtype, copy=False) for k, v in update.items()}, norm


def secure_round_reply(
    update: Mapping[str, np.ndarray], manifest: TensorManifest, *, weight: int, metrics: Mapping[str, int | float | str]
) -> RecordDict:
    """The ``fitres.*`` records SecAgg+ masks: the update in manifest order, its weight, and
    aggregate metrics (scalars only: no per-participant values)."""
    fit_res = FitRes(
        status=Status(code=Code.OK, message="ok"),
        parameters=ndarrays_to_parameters(encode_ordered(update, manifest)),
        num_examples=int(weight),
        metrics=dict(metrics),
    )
    return compat.fitres_to_recorddict(fit_res, keep_input=True)


def ordered_parameters(state: Mapping[str, np.ndarray], manifest: TensorManifest) -> Parameters:
    return ndarrays_to_parameters(encode_ordered(state, manifest))
