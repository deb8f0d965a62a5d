"""``regard policy show|set``: the policy profiles in ``<data_dir>/policy.toml``; changes are audited."""

from __future__ import annotations

from dataclasses import asdict

import click

from regard.accountability.guard import admin_record
from regard.accountability.policy import to_toml
from regard.cli.common import actor_option, resolve_actor, workspace, workspace_options
from regard.cli.output import emit_json


@click.group("policy")
def policy() -> None:
    """Policy profiles: operations, collections, roles, threshold floors, purpose, review, rate limits."""


@policy.command("show")
@click.argument("profile", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@workspace_options
def show(profile: str | None, as_json: bool) -> None:
    """Print every profile (or one) with its settings."""
    config = workspace().policies().load()
    if profile is not None:
        p = config.profile(profile)
        data = {k: v for k, v in asdict(p).items()}
        if as_json:
            emit_json(data)
        else:
            for key, value in data.items():
                click.echo(f"{key} = {value}")
        return
    if as_json:
        emit_json(
            {
                "audit": {"retention_floor_days": config.retention_floor_days},
                "profiles": {n: asdict(p) for n, p in config.profiles.items()},
            }
        )
    else:
        click.echo(to_toml(config), nl=False)


@policy.command("set")
@click.argument("profile")
@click.argument("setting")
@click.argument("value")
@actor_option
@workspace_options
def set_(profile: str, setting: str, value: str, actor: str | None) -> None:
    """Change one SETTING of PROFILE (lists comma-separated); ``audit retention_floor_days N`` sets the
    log's retention floor. The change is recorded in the audit log."""
    ws = workspace()
    log = ws.audit()
    who = resolve_actor(actor)
    params = {"profile": profile, "setting": setting, "value": value}
    try:
        old, new = ws.policies().set(profile, setting, value)
    except Exception as exc:
        admin_record(
            log,
            "PolicySet",
            principal=who,
            parameters=params,
            outcome="error",
            error={"code": getattr(exc, "code", "InternalServerError"), "message": str(exc)},
        )
        raise
    rec = admin_record(
        log,
        "PolicySet",
        principal=who,
        parameters=params,
        results={
            "old": list(old) if isinstance(old, tuple) else old,
            "new": list(new) if isinstance(new, tuple) else new,
        },
    )
    click.echo(f"{profile}.{setting}: {old!r} -> {new!r} (audit record {rec['seq']})")


commands = [policy]
