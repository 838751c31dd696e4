"""The site's ClientApp.

Order of work for every message (the one-way flow of docs/architecture.md):
site config -> study from the message -> consent gate on participants.tsv -> read only the
eligible participants' files -> train with DP / evaluate -> send adapter tensors and
aggregate metrics only.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedneuro.data.bids import eligible_participants, read_participants
from fedneuro.federation.codec import decode_arrays, encode_arrays
from fedneuro.federation.launch import site_for_node
from fedneuro.governance.site import SiteConfig, derive_seed
from fedneuro.models.adapters import AdaptedModel
from fedneuro.models.exchange import load_trainable_state, trainable_manifest, trainable_state
from fedneuro.privacy.accountant import ledger_epsilon
from fedneuro.privacy.ledger import LedgerEntry, PrivacyLedger
from fedneuro.study import Study
from fedneuro.training.local import evaluate as evaluate_model
from fedneuro.training.local import train_dp
from fedneuro.training.site import SiteData, build_study_model, prepare_site_data

logger = logging.getLogger("fedneuro.client")
app = ClientApp()

# Per process: Ray actors (simulation) serve many messages, so reading and harmonising the
# site's data and building the model happen once per (site, study).
_SESSIONS: dict[tuple[str, str], tuple[SiteData, AdaptedModel]] = {}


def _session(site: SiteConfig, study: Study) -> tuple[SiteData, AdaptedModel]:
    key = (site.name, study.digest())
    if key not in _SESSIONS:
        # Governance gate: decide who may be used from participants.tsv before any
        # recording is opened; the data layer reads only the cohort it is given.
        cohort = eligible_participants(read_participants(site.bids_root, study.data), study.data)
        data = prepare_site_data(site.bids_root, cohort, study, site_name=site.name)
        _SESSIONS[key] = (data, build_study_model(study))
    return _SESSIONS[key]


def _study_from(msg: Message) -> Study:
    return Study.from_json(str(msg.content["config"]["study"]))


@app.train()
def train(msg: Message, context: Context) -> Message:
    site = site_for_node(dict(context.node_config))
    study = _study_from(msg)
    server_round = int(msg.content["config"]["server-round"])
    data, model = _session(site, study)
    manifest = trainable_manifest(model.module)
    load_trainable_state(model.module, decode_arrays(msg.content["arrays"], manifest, source="global model"))

    result = train_dp(
        model.module,
        data.train.X,
        data.train.y,
        training=study.training,
        privacy=study.privacy,
        sampling_seed=derive_seed(study.study.seed, site.name, server_round, "poisson"),
        noise_seed=site.noise_seed_for(study.study.id, server_round),
    )
    ledger = PrivacyLedger(site.ledger_path)
    now = datetime.now(UTC).isoformat()
    ledger.append(
        [
            LedgerEntry(
                study_id=study.study.id,
                round=server_round,
                noise_multiplier=h.noise_multiplier,
                sample_rate=h.sample_rate,
                steps=h.steps,
                max_grad_norm=study.privacy.max_grad_norm,
                unit=study.privacy.unit,
                recorded_at=now,
            )
            for h in result.dp_history
        ]
    )
    epsilon = ledger_epsilon(
        ledger.entries(study.study.id), delta=study.privacy.delta, accountant=study.privacy.accountant
    )
    logger.info("site %s round %d: %d DP steps, ε=%.3f (δ=%g, unit=%s)",
                site.name, server_round, result.steps, epsilon, study.privacy.delta, study.privacy.unit)
    metrics = MetricRecord(
        {
            "num-examples": result.num_examples,
            "train-loss": result.mean_loss,
            "dp-steps": result.steps,
            "epsilon": epsilon,
            "delta": study.privacy.delta,
        }
    )
    content = RecordDict(
        {
            "arrays": encode_arrays(trainable_state(model.module)),
            "metrics": metrics,
            "site": ConfigRecord({"name": site.name}),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    site = site_for_node(dict(context.node_config))
    study = _study_from(msg)
    data, model = _session(site, study)
    manifest = trainable_manifest(model.module)
    load_trainable_state(model.module, decode_arrays(msg.content["arrays"], manifest, source="global model"))
    counts = evaluate_model(
        model.module, data.test.X, data.test.y, data.test.participant, n_classes=study.data.n_classes
    )
    metrics = MetricRecord(
        {
            "num-examples": counts.num_windows,
            "eval-loss": counts.mean_loss,
            "window-confusion": [int(v) for v in counts.window_confusion.ravel()],
            "participant-confusion": [int(v) for v in counts.participant_confusion.ravel()],
        }
    )
    content = RecordDict({"metrics": metrics, "site": ConfigRecord({"name": site.name})})
    return Message(content=content, reply_to=msg)
