"""``regard keys``: create, list and revoke the access keys the HTTP API accepts."""

from __future__ import annotations

import json

import click

from regard.accountability.policy import ROLES
from regard.cli.common import record_admin_change, workspace, workspace_options


@click.group("keys")
def keys() -> None:
    """Manage access keys for the Rekognition-compatible API (AWS Signature Version 4)."""


@keys.command("create")
@click.option("--name", required=True, help="A label for the key (who or what uses it).")
@click.option(
    "--profile",
    default="verification",
    show_default=True,
    help="Policy profile of the key: verification, identification or admin (safe by default; "
    "an admin key, which has no threshold floor, must be asked for and is audited).",
)
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="operator",
    show_default=True,
    help="Role: operator, verifier or admin.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@workspace_options
def create(name: str, profile: str, role: str, as_json: bool) -> None:
    """Create a key and print its id and secret. The secret is shown only this once."""
    known = sorted(workspace().policies().load().profiles)
    if profile not in known:  # a key under a profile the policy does not define could never be used
        raise click.BadParameter(
            f"unknown profile {profile!r}; the profiles of the policy are: {', '.join(known)}",
            param_hint="'--profile'",
        )
    key, secret = workspace().keys().create(name, role=role, profile=profile)
    record_admin_change(  # audit log (regard.accountability): who created which key, never the secret
        "CreateAccessKey",
        {"Name": name, "Role": role, "Profile": profile},
        {"AccessKeyId": key.access_key_id},
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "AccessKeyId": key.access_key_id,
                    "SecretAccessKey": secret,
                    "Name": key.name,
                    "Role": key.role,
                    "Profile": key.profile,
                }
            )
        )
        return
    click.echo(f"aws_access_key_id = {key.access_key_id}")
    click.echo(f"aws_secret_access_key = {secret}")
    click.echo("# store the secret now: regard cannot show it again", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@workspace_options
def list_keys(as_json: bool) -> None:
    """List keys (never their secrets)."""
    rows = workspace().keys().list()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "AccessKeyId": k.access_key_id,
                        "Name": k.name,
                        "Role": k.role,
                        "Profile": k.profile,
                        "CreatedAt": k.created_at,
                        "RevokedAt": k.revoked_at,
                    }
                    for k in rows
                ]
            )
        )
        return
    for k in rows:
        state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
        click.echo(
            f"{k.access_key_id}  {k.name}  role={k.role}  profile={k.profile}  {k.created_at}  {state}"
        )


@keys.command("revoke")
@click.argument("access_key_id")
@workspace_options
def revoke(access_key_id: str) -> None:
    """Revoke a key; requests signed with it are refused from then on."""
    key = workspace().keys().revoke(access_key_id)
    record_admin_change("RevokeAccessKey", {"AccessKeyId": access_key_id}, {"RevokedAt": key.revoked_at})
    click.echo(f"{key.access_key_id} revoked at {key.revoked_at}")


commands = [keys]
