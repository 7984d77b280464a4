"""The Typer applications the verbs attach to, the shared option help texts and `deploycc --version`."""

from __future__ import annotations

from typing import Optional

import typer
from typer.core import TyperOption

from ..paths import presets_dir


def preset_names() -> list[str]:
    """The presets that ship a checkpoint (deploycc/presets/*.pt), sorted; cheap: no torch import."""
    return sorted(path.stem for path in presets_dir().glob("*.pt"))


MODEL_HELP = f"preset name ({', '.join(preset_names())}) or checkpoint path"
ARTIFACT_HELP = f"artifact folder, checkpoint path or preset name ({', '.join(preset_names())})"
TRAIN_MODEL_HELP = f"architecture preset: {', '.join(preset_names())}"
COMPILE_HELP = ("compute the student's energies and their gradient with torch.compile (one process; needs a C++ "
                "compiler; the first step compiles for a minute or two)")


def _flag_type(self: TyperOption, ctx) -> str | None:
    """No type column for flags: typer's rich help shows '<bool>' for every flag (--help included)."""
    return None if self.is_flag else _option_type(self, ctx)


if hasattr(TyperOption, "display_type_rich"):  # typer's private hook: other releases lack it, and keep '<bool>'
    _option_type = getattr(TyperOption.display_type_rich, "unpatched", TyperOption.display_type_rich)  # reload-safe
    _flag_type.unpatched = _option_type  # type: ignore[attr-defined]
    TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


def _version(value: bool) -> None:
    if value:
        from ..versions import version_line
        from .console import console

        console.print(version_line(), markup=False, soft_wrap=True)
        raise typer.Exit()


app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compile compact ML force fields: build, verify, bench.")
data_app = typer.Typer(no_args_is_help=True, help="Make and import datasets (HDF5).")
app.add_typer(data_app, name="data")


@app.callback()
def root(version: Optional[bool] = typer.Option(None, "--version", is_eager=True, callback=_version,
                                                help="print the versions of deploycc, torch and ONNX Runtime")
         ) -> None:
    """Compile compact ML force fields: build, verify, bench."""
