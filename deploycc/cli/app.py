"""The Typer applications the verbs attach to."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compile compact ML force fields: build, verify, bench.")
data_app = typer.Typer(no_args_is_help=True, help="Make and import datasets (HDF5).")
app.add_typer(data_app, name="data")
