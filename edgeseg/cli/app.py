"""The Typer application and the one place where errors become one line and an exit code."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="edgeseg",
    help="Load, reparameterize, export, check parity and benchmark efficient vision models for edge targets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        from edgeseg import __version__

        typer.echo(f"edgeseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit.")) -> None:
    _state["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    import click

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="edgeseg", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the CLI boundary
        from edgeseg.errors import EdgesegError  # lazy: keeps `edgeseg --help` fast

        if debug:
            raise
        if isinstance(exc, EdgesegError):
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
