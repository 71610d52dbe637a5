"""The ``stitch-import`` command line: a thin shell over the library's objects."""

from __future__ import annotations

import click

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="stitch-import")
def cli() -> None:
    """Send records to the Stitch Import API, and replay what could not be delivered."""


def main() -> None:
    """Console-script entry point."""
    cli()
