"""The Typer application and the one place where errors become one line and an exit code."""

from __future__ import annotations

import contextlib
import os
import sys

import typer

from edgeseg import interrupt

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


def _click_exceptions():
    """The exception module of the click that typer runs on: typer >= 0.2x vendors its own copy
    (typer._click), so the separately installed `click` package's classes would never match."""
    return sys.modules[typer.BadParameter.__module__]


def _interrupted(process: bool = False) -> None:
    import signal

    # a second Ctrl-C (or a pending one) must not turn the clean exit into a KeyboardInterrupt
    # escaping after the handler is restored (the process would then die by SIGINT, not exit 130)
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("interrupted", file=sys.stderr)
    if process:
        # The `edgeseg` process itself: every `with`/`finally` has run while the interrupt
        # unwound (staged outputs are gone), so leave now. A normal exit could still end in
        # death by SIGINT (status -2, not 130): CPython remembers a KeyboardInterrupt that
        # crossed PyRun_* inside native code (pybind11 during `import torch`) as unhandled even
        # when it was caught, and re-raises SIGINT at shutdown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(130)


def _usage_error(exc, errors) -> None:
    message = exc.format_message().strip() or type(exc).__name__
    message = (message[:1].lower() + message[1:]).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    where = f"`{ctx.command_path} --help`" if ctx is not None else "`edgeseg --help`"
    print(f"error: {message} (see {where})", file=sys.stderr)
    sys.exit(exc.exit_code if isinstance(exc, errors.UsageError) else 1)


def main(argv: list[str] | None = None) -> None:
    import signal

    errors = _click_exceptions()
    args = sys.argv[1:] if argv is None else argv
    process = argv is None  # the `edgeseg` command itself, not an in-process call (tests, embedding)
    debug = "--debug" in args
    interrupt.clear()
    hits: list[int] = []

    def on_sigint(signum, frame):
        # typer turns KeyboardInterrupt into a plain return of 130 (non-standalone mode); the flag
        # tells that apart from a normal return, so Ctrl-C can never look like success.
        hits.append(signum)
        interrupt.request()  # read before every publish, in case native code swallows the exception
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread (an embedding application): leave its handler alone
        previous = None
    try:
        rv = app(args=args, prog_name="edgeseg", standalone_mode=False)
        if hits:
            _interrupted(process)
        if isinstance(rv, int) and not isinstance(rv, bool) and rv:
            sys.exit(rv)
    except KeyboardInterrupt:
        _interrupted(process)
    except typer.Abort:
        _interrupted(process)
    except typer.Exit as exc:
        if hits:
            _interrupted(process)
        sys.exit(exc.exit_code)
    except errors.NoArgsIsHelpError as exc:
        print(exc.format_message())  # `edgeseg` (or a group) alone: its help, as click does, and success
        sys.exit(0)
    except typer.TyperException as exc:
        _usage_error(exc, errors)
    except Exception as exc:  # noqa: BLE001 - the CLI boundary
        from edgeseg.errors import EdgesegError  # lazy: keeps `edgeseg --help` fast

        if debug:
            raise
        if isinstance(exc, EdgesegError):
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        if isinstance(exc, OSError) and exc.strerror:
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"error: {where}{exc.strerror} (check the path and the filesystem; --debug shows where)", file=sys.stderr)
            sys.exit(1)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
    finally:
        if previous is not None and not hits:
            signal.signal(signal.SIGINT, previous)
