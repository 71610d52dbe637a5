"""The ``stitch-import`` command line: a thin shell over the library's objects."""

from __future__ import annotations

from typing import Optional

import click

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="stitch-import")
def cli() -> None:
    """Send records to the Stitch Import API, and replay what could not be delivered."""


@cli.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback unless told otherwise).")
@click.option("--port", type=int, default=0, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--token", "tokens", multiple=True, metavar="T",
              help="An Import API token to accept (repeatable, at most two; "
                   "one is generated if none is given).")
@click.option("--client-id", type=int, default=7723, show_default=True,
              help="Client id of the emulated integration.")
@click.option("--source-id", type=int, default=None,
              help="Connect API source id of the integration (one is chosen if omitted).")
@click.option("--region", type=click.Choice(["us", "eu"]), default="us", show_default=True,
              help="Region the emulator plays.")
@click.option("--sink", is_flag=True,
              help="Accept authorized requests without parsing or storing them (benchmarks).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON line (base_url, token, client_id, ...) once listening.")
def emulator_command(host: str, port: int, tokens: tuple[str, ...], client_id: int,
                     source_id: Optional[int], region: str, sink: bool, as_json: bool) -> None:
    """Run a local Stitch Import API emulator in the foreground until Ctrl-C or SIGTERM."""
    from .emulator.command import run_emulator
    from .errors import StitchImportError

    try:
        run_emulator(host=host, port=port, tokens=tokens, client_id=client_id,
                     source_id=source_id, region=region, sink=sink, as_json=as_json)
    except (StitchImportError, OSError) as error:
        raise click.ClickException(str(error)) from error


def main() -> None:
    """Console-script entry point."""
    cli()
