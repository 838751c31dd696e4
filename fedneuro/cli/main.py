"""The `fedneuro` command."""

from __future__ import annotations

import typer

from fedneuro import __version__
from fedneuro.cli import data, model, predict, privacy, simulate, study, synth
from fedneuro.cli import audit, consent
from fedneuro.cli import deploy, provision
from fedneuro.cli import evaluate
from fedneuro.cli import report
from fedneuro.cli import approval
from fedneuro.cli import status as status_cli
from fedneuro.cli import benchmark

app = typer.Typer(
    name="fedneuro",
    help="Federated, privacy-preserving fine-tuning of neuroscience foundation models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(synth.app, name="synth")
app.add_typer(study.app, name="study")
app.add_typer(model.app, name="model")
app.add_typer(privacy.app, name="privacy")
app.add_typer(data.app, name="data")
app.add_typer(consent.app, name="consent")
app.add_typer(audit.app, name="audit")
app.add_typer(deploy.server_app, name="server")
app.add_typer(deploy.site_app, name="site")
deploy.site_app.command("review")(approval.review)
deploy.site_app.command("approve")(approval.approve)
deploy.site_app.command("reject")(approval.reject)
app.command("simulate")(simulate.simulate)
app.command("demo")(simulate.demo)
app.command("predict")(predict.predict)
app.command("evaluate")(evaluate.evaluate)
app.command("report")(report.report)
app.command("provision")(provision.provision)
app.command("run")(deploy.run)
app.command("status")(status_cli.status)
app.command("benchmark")(benchmark.benchmark)


@app.command("version")
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
