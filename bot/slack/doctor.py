"""`supportbot doctor`: what a first run in a real workspace needs, checked before anyone asks.

The token works and carries every scope the manifest asks for (Slack reports a token's scopes in
the `X-OAuth-Scopes` header of every response), the manifest asks for every scope the code needs,
and the bot is a member of the channels it must post in (escalation, alerts, report): posting
there otherwise fails with `not_in_channel`, and nobody would hear about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

if TYPE_CHECKING:
    from bot.settings import Settings

MANIFEST = Path(__file__).resolve().parents[2] / "slack-manifest.yml"
# Scopes the running bot needs (bot/slack calls these methods; see slack-manifest.yml for why).
REQUIRED_SCOPES = frozenset(
    {
        "app_mentions:read",
        "assistant:write",
        "channels:history",
        "groups:history",
        "im:history",
        "mpim:history",
        "chat:write",
        "commands",
        "reactions:write",
        "usergroups:read",
    }
)
OPTIONAL_SCOPES = {"reactions:write": "status reactions on questions are skipped"}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # not fatal: the bot runs, with something missing

    def line(self) -> str:
        mark = "ok  " if self.ok else ("warn" if self.warning else "FAIL")
        return f"[{mark}] {self.name}: {self.detail}"


def manifest_scopes(path: Path = MANIFEST) -> set[str]:
    import yaml

    return set(yaml.safe_load(path.read_text())["oauth_config"]["scopes"]["bot"])


def scope_checks(granted: set[str], manifest: set[str]) -> list[Check]:
    """Pure: the manifest against the code, and the token against the manifest."""
    checks = []
    missing_in_manifest = REQUIRED_SCOPES - manifest
    checks.append(
        Check(
            "manifest vs code",
            not missing_in_manifest,
            "the manifest asks for every scope the code uses"
            if not missing_in_manifest
            else f"add to slack-manifest.yml: {', '.join(sorted(missing_in_manifest))}",
        )
    )
    missing = manifest - granted
    fatal = {scope for scope in missing if scope not in OPTIONAL_SCOPES}
    if not missing:
        checks.append(Check("token scopes", True, f"{len(granted)} scopes, all the manifest asks for"))
    else:
        why = "; ".join(f"{scope}: {OPTIONAL_SCOPES[scope]}" for scope in sorted(missing - fatal))
        checks.append(
            Check(
                "token scopes",
                False,
                f"missing {', '.join(sorted(missing))} (reinstall the app from slack-manifest.yml)"
                + (f" [{why}]" if why else ""),
                warning=not fatal,
            )
        )
    return checks


async def membership(client: AsyncWebClient, channel: str) -> tuple[bool | None, str]:
    """Whether the bot is in `channel`: from conversations.info if the token may read it, else by
    reading a (non-existent) thread there, which only a member may do."""
    try:
        info = (await client.conversations_info(channel=channel))["channel"]
        return bool(info.get("is_member") or info.get("is_im")), "member" if info.get("is_member") else "not a member"
    except SlackApiError as exc:
        code = exc.response.get("error")
        if code != "missing_scope":
            return False, code or "error"
    try:
        await client.conversations_replies(channel=channel, ts="1000000000.000001", limit=1)
        return True, "member"
    except SlackApiError as exc:
        code = exc.response.get("error")
        if code in ("thread_not_found", "message_not_found"):
            return True, "member"
        if code == "missing_scope":
            return None, "cannot tell (token may not read this channel)"
        return False, code or "error"


async def run_checks(settings: Settings, client: AsyncWebClient, manifest: set[str] | None = None) -> list[Check]:
    """Every check, in order; stops after the token check if the token does not work."""
    checks: list[Check] = []
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        return [Check("token", False, f"auth.test failed: {exc.response.get('error')}")]
    except Exception as exc:  # noqa: BLE001 (no network, wrong URL)
        return [Check("token", False, f"cannot reach Slack: {type(exc).__name__}")]
    checks.append(Check("token", True, f"bot {response.get('user')} in team {response.get('team_id')}"))
    header = next((v for k, v in (response.headers or {}).items() if k.lower() == "x-oauth-scopes"), "")
    granted = {scope.strip() for scope in header.split(",") if scope.strip()}
    checks.extend(scope_checks(granted, manifest if manifest is not None else manifest_scopes()))
    channels: dict[str, str] = {}
    for name, channel in (
        ("escalation channel", settings.escalation_channel),
        ("alerts channel", getattr(settings, "alerts_channel", "")),
        ("eval report channel", settings.eval_report_channel),
    ):
        if channel:
            channels.setdefault(channel, name)
    for channel in [*settings.auto_answer_channels, *settings.allowed_channels]:
        channels.setdefault(channel, "answer channel")
    if not settings.escalation_channel:
        checks.append(
            Check(
                "escalation channel",
                False,
                "SUPPORTBOT_ESCALATION_CHANNEL is not set: questions the bot cannot answer reach nobody",
            )
        )
    if not getattr(settings, "alerts_channel", "") and not settings.admin_users:
        checks.append(
            Check(
                "alerts",
                False,
                "neither SUPPORTBOT_ALERTS_CHANNEL nor SUPPORTBOT_ADMIN_USERS is set: failures reach nobody",
                warning=True,
            )
        )
    for channel, name in channels.items():
        member, detail = await membership(client, channel)
        hint = "" if member else f" (invite the bot: /invite @{response.get('user') or 'supportbot'} in {channel})"
        checks.append(Check(f"{name} {channel}", bool(member), detail + hint, warning=member is None))
    return checks


def summary(checks: list[Check]) -> tuple[str, bool]:
    """The report, and whether nothing failed (warnings do not fail)."""
    ok = all(check.ok or check.warning for check in checks)
    return "\n".join(check.line() for check in checks), ok


def as_dicts(checks: list[Check]) -> list[dict[str, Any]]:
    return [{"name": c.name, "ok": c.ok, "warning": c.warning, "detail": c.detail} for c in checks]
