"""The command line: thin. Parse, call the step's module (imported lazily), print."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from newsletter import __version__
from newsletter.config import Config, load_config, option_error


def _like_setting(setting: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A callback for an option that stands for a setting ("smtp.rate"): the same range holds."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and (why := option_error(setting, value)):
            raise click.BadParameter(why)
        return value

    return check


ALERT = click.argument("alert", type=click.Path(path_type=Path))
CONFIG_KEY = "newsletter.config"


# --config goes before or after the subcommand (`newsletter send … --config FILE` is how people
# type it): every command and group takes the option; the last one given wins. The settings are
# read when a command first needs them (pass_config), not by the group.
def _remember_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.meta[CONFIG_KEY] = value  # ctx.meta is shared by a context and its subcontexts


def _config_option(envvar: str | None = None) -> click.Option:
    return click.Option(
        ["--config"],
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=envvar,
        expose_value=False,
        is_eager=True,
        callback=_remember_config,
        help="Settings file (default: ./newsletter.toml if present); before or after the command.",
    )


class _Command(click.Command):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_config_option())


class _Group(click.Group):
    command_class = _Command
    group_class = type  # subgroups (newsletter recipients …) are _Group too

    def __init__(self, *args: Any, config_envvar: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_config_option(config_envvar))


def pass_config(f: Callable[..., Any]) -> Callable[..., Any]:
    """Like click.make_pass_decorator(Config): the settings as the first argument, read once."""

    @click.pass_context
    def new_func(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        root = ctx.find_root()
        if not isinstance(root.obj, Config):
            root.obj = load_config(ctx.meta.get(CONFIG_KEY))
        return ctx.invoke(f, root.obj, *args, **kwargs)

    return functools.update_wrapper(new_func, f)


@click.group(
    cls=_Group,
    config_envvar="NEWSLETTER_CONFIG",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="newsletter")
def cli() -> None:
    """Build, check, preview, send and forward bilingual action alerts."""


# --- issue 10: init -----------------------------------------------------------------------------


@cli.command(cls=click.Command)
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--example", is_flag=True, help="Add the 2011 NALACC alert as an example.")
@click.option(
    "--templates",
    "with_templates",
    is_flag=True,
    help="Copy the default templates and catalogs in for editing (each copy overrides ours).",
)
def init(folder: Path, example: bool, with_templates: bool) -> None:
    """Make FOLDER a site: newsletter.toml (every setting), alerts/, recipients/sample.csv.

    Writes only files that are not there yet (run it again on a site to add --example or
    --templates); never overwrites one.
    """
    from newsletter.init import run_init

    run_init(folder, example=example, templates=with_templates)


# --- issue 2: build, new, check, preview --------------------------------------------------------


@cli.command()
@ALERT
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@pass_config
def build(cfg: Config, alert: Path, out: Path | None) -> None:
    """Write <lang>.html, <lang>.txt and <lang>.eml for each edition of ALERT."""
    from newsletter.render import run_build

    run_build(cfg, alert, out)


@cli.command()
@click.argument("alert_id")
@click.option(
    "--date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The alert's date (default: the one the id starts with, else today).",
)
@pass_config
def new(cfg: Config, alert_id: str, date: datetime | None) -> None:
    """Start a new alert folder with every block, marked where the editor must write."""
    from newsletter.content import run_new

    run_new(cfg, alert_id, date=date.date() if date else None)


@cli.command()
@ALERT
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="First list the file each template and catalog comes from.",
)
@pass_config
def check(cfg: Config, alert: Path, verbose: bool) -> None:
    """Report every problem in ALERT's editions; exit 1 on any error."""
    from newsletter.check import run_check

    if verbose:
        from newsletter.resources import sources

        for line in sources(cfg):
            click.echo(line)
    run_check(cfg, alert)


@cli.command()
@ALERT
@click.option(
    "--port",
    default=8025,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port on 127.0.0.1 (0: any free port).",
)
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
@click.option(
    "--recipients",
    "recipients_csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV to pick a recipient from (default: recipients/sample.csv if present).",
)
@pass_config
def preview(
    cfg: Config, alert: Path, port: int, no_browser: bool, recipients_csv: Path | None
) -> None:
    """Serve ALERT on 127.0.0.1 with live reload."""
    from newsletter.preview import run_preview

    run_preview(cfg, alert, port=port, open_browser=not no_browser, recipients_csv=recipients_csv)


# --- issue 3: send, status, suppress, recipients -----------------------------------------------


@cli.command()
@ALERT
@click.option(
    "--to",
    "to_csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The recipient CSV (required, except for a --test copy).",
)
@click.option("--dry-run", is_flag=True, help="Everything but delivery, with the report.")
@click.option("--limit", type=click.IntRange(min=1), help="Send to at most N recipients.")
@click.option(
    "--test",
    "test_address",
    help="Send ADDRESS one [TEST] copy per language (sample values), nothing to the list.",
)
@click.option(
    "--as", "test_as", metavar="MEMBER", help="With --test and --to: the copy MEMBER would get."
)
@click.option("--lang", type=click.Choice(["es", "en"]), help="With --test: only this edition.")
@click.option(
    "--connections",
    type=int,
    callback=_like_setting("smtp.connections"),
    help="Parallel SMTP connections (1-32).",
)
@click.option(
    "--rate",
    type=float,
    callback=_like_setting("smtp.rate"),
    help="Messages per second overall (0: no cap).",
)
@click.option("--retry-failed", is_flag=True, help="Retry recipients that failed with 5xx.")
@click.option(
    "--retry-uncertain", is_flag=True, help="Resend recipients left in flight by a crash."
)
@click.option(
    "--csv-only", is_flag=True, help="Leave out the web's confirmed subscribers not in the CSV."
)
@click.option("--yes", is_flag=True, help="Do not ask before a real SMTP send.")
@pass_config
def send(cfg: Config, alert: Path, to_csv: Path | None, **options: object) -> None:
    """Send ALERT to every valid recipient of the CSV and the web's subscribers, once each."""
    from newsletter.campaign import run_send

    run_send(cfg, alert, to_csv, **options)


@cli.command()
@ALERT
@pass_config
def status(cfg: Config, alert: Path) -> None:
    """Counts per state for ALERT; failures and uncertain recipients listed."""
    from newsletter.status import run_status

    run_status(cfg, alert)


@cli.command()
@click.argument("addresses", nargs=-1)
@click.option(
    "--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Import a CSV."
)
@click.option(
    "--export",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Write the suppression list as CSV (email,reason,since) to FILE ('-': standard output).",
)
@pass_config
def suppress(
    cfg: Config, addresses: tuple[str, ...], csv_path: Path | None, export: Path | None
) -> None:
    """Never send to these addresses again (unsubscribe by hand); --export writes the list."""
    from newsletter.people import run_suppress

    run_suppress(cfg, addresses, csv_path, export)


@cli.group()
def recipients() -> None:
    """Recipient lists."""


@recipients.command("check")
@click.argument("csv_path", type=click.Path(dir_okay=False, path_type=Path))
@pass_config
def recipients_check(cfg: Config, csv_path: Path) -> None:
    """Report every bad row of a recipient CSV, and suppressed members, without sending."""
    from newsletter.people import run_check

    run_check(cfg, csv_path)


@recipients.command("export")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the CSV here (default: standard output).",
)
@pass_config
def recipients_export(cfg: Config, out: Path | None) -> None:
    """Every person the state file knows, as CSV: email,name,language,status,reason,since,source."""
    from newsletter.export import run_export

    run_export(cfg, out)


# --- issue 13: bounces ------------------------------------------------------------------------


@cli.group()
def bounces() -> None:
    """Bounces, complaints and auto-replies: read them into the suppression list."""


@bounces.command("read")
@click.argument("paths", nargs=-1, required=True)
@pass_config
def bounces_read(cfg: Config, paths: tuple[str, ...]) -> None:
    """Read PATH… (.eml files, Maildir folders, mbox files; - for standard input)."""
    from newsletter.bounces.commands import run_read

    run_read(cfg, paths)


@bounces.command("fetch")
@pass_config
def bounces_fetch(cfg: Config) -> None:
    """Read the [bounces] IMAP mailbox; processed mail goes to done_folder, never deleted."""
    from newsletter.bounces.commands import run_fetch

    run_fetch(cfg)


# --- issue 4: serve, forward --------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Requests handled at once (slow clients wait without holding one).",
)
@pass_config
def serve(cfg: Config, host: str, port: int, threads: int) -> None:
    """Serve the public pages: archive, forward, language switch, unsubscribe."""
    from newsletter.web import run_serve

    run_serve(cfg, host, port, threads)


@cli.command()
@ALERT
@click.option("--to", "to", multiple=True, required=True, help="A friend's address (up to 5).")
@click.option("--from-name", required=True, help="Who forwards it.")
@click.option("--note", default="", help="A short personal note (500 characters at most).")
@click.option("--lang", type=click.Choice(["es", "en"]), help="Edition to forward.")
@pass_config
def forward(
    cfg: Config, alert: Path, to: tuple[str, ...], from_name: str, note: str, lang: str | None
) -> None:
    """Send a forward-safe copy of ALERT to friends, from the terminal."""
    from newsletter.web import run_forward

    run_forward(cfg, alert, to, from_name, note, lang)


# --- issue 11: subscribe-form ------------------------------------------------------------------


@cli.command("subscribe-form")
@click.option("--lang", type=click.Choice(["es", "en"]), default="es", show_default=True)
@pass_config
def subscribe_form(cfg: Config, lang: str) -> None:
    """Print the sign-up form as plain HTML, to paste into the organisation's own website."""
    from newsletter.web.subscribe import run_subscribe_form

    click.echo(run_subscribe_form(cfg, lang), nl=False)


def main() -> None:
    """Entry point of the `newsletter` script and `python -m newsletter`."""
    cli(prog_name="newsletter")
