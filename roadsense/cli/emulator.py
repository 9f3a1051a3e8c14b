"""`roadsense emulator`: validate parameter files and report the emulator's statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def check(
    file: Annotated[Path, typer.Argument(help="Emulator parameter file (JSON) to validate.")],
) -> None:
    """Validate a parameter file: one line per problem and exit 1, or its version and exit 0."""
    from roadsense.comms.params import check_params_file, params_version

    problems = check_params_file(file)
    if problems:
        for problem in problems:
            typer.echo(f"{file}: {problem}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{file}: ok ({params_version(file)})")


@app.command()
def report(
    params: Annotated[Path | None, typer.Option(help="Parameter file (default: packaged).")]
    = None,
    out: Annotated[Path, typer.Option(help="Folder for the PNG plots.")] = Path("emulator_report"),
    duration_s: Annotated[float, typer.Option(
        min=10.0, help="Simulated seconds per distance (longer: tighter).")] = 600.0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the radio's generator.")] = 0,
) -> None:
    """Measure the emulator at fixed distances (DR off), print a table and write plots."""
    from roadsense.comms.params import load_params, params_version
    from roadsense.comms.report import fidelity_rows, fidelity_run, write_plots

    p = load_params(params)
    console = Console()
    with console.status(f"running {duration_s:g} s of radio at fixed distances..."):
        result = fidelity_run(p, duration_s=duration_s, seed=seed)
    rows = fidelity_rows(result)
    table = Table(title=f"ESP-NOW emulator vs calibration figures ({params_version(p)})")
    for col in ("statistic", "where", "measured", "target", "tolerance", "unit", "ok"):
        table.add_column(col, justify="right" if col in ("measured", "target", "tolerance")
                         else "left")
    for r in rows:
        table.add_row(r["statistic"], r["where"], f"{r['measured']:.4g}", f"{r['target']:.4g}",
                      f"±{r['tolerance']:.3g}", r["unit"],
                      "[green]yes[/green]" if r["ok"] else "[red]NO[/red]")
    console.print(table)
    paths = write_plots(result, out)
    console.print(f"plots written: {', '.join(str(x) for x in paths)}")
