"""The admin commands of the `warden` CLI, run as a subprocess against a real server."""

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ADMIN_TOKEN
from tests.helpers import authorize_request

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "policies.yaml"
# Nothing listens there: a command that must fail before calling the server is run against it.
NOWHERE = "127.0.0.1:1"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


async def cli(target: str, *args: str, token: str | None = ADMIN_TOKEN,
              env: dict[str, str] | None = None) -> Result:
    """Run `warden ARGS --target TARGET [--admin-token TOKEN]`. The server runs on this event
    loop, so the subprocess must be awaited, not waited for."""
    flags = ["--target", target] + (["--admin-token", token] if token is not None else [])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warden", *args, *flags, env={**clean, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    return Result(process.returncode, out.decode(), err.decode())


async def test_apply_the_example_then_again(warden, db):
    result = await cli(warden.target, "apply", "-f", str(EXAMPLE))
    assert result.code == 0, result.err
    assert result.lines[0] == "create org acme"
    assert "create team acme-support" in result.lines
    assert "create policy acme-support-bot-rpm" in result.lines
    assert result.lines[-1] == "applied: 11 created, 0 updated, 0 deleted"
    assert await db.fetchval("SELECT count(*) FROM policies WHERE org_id = 'acme'") == 4
    assert await db.fetch("SELECT user_id, team_id FROM user_teams ORDER BY 1, 2") == [
        ("alice", "acme-support"), ("bob", "acme-platform"), ("bob", "acme-support")]

    again = await cli(warden.target, "apply", "-f", str(EXAMPLE))
    assert (again.code, again.lines) == (0, [f"no changes: {EXAMPLE} matches the database"])


async def test_changes_print_their_fields(warden, tmp_path):
    assert (await cli(warden.target, "apply", "-f", str(EXAMPLE))).code == 0
    changed = tmp_path / "changed.yaml"
    changed.write_text(EXAMPLE.read_text().replace("limit: 600}", "limit: 300}", 1)
                       .replace("  - id: acme-search\n", "  - id: acme-search-v2\n", 1))
    result = await cli(warden.target, "apply", "-f", str(changed))
    assert result.code == 0, result.err
    assert result.lines == [
        "create app acme-search-v2",
        "update policy acme-support-bot-rpm (fields: config)",
        "delete app acme-search",
        "applied: 1 created, 1 updated, 1 deleted"]


async def test_dry_run_prints_a_plan_and_changes_nothing(warden, db):
    result = await cli(warden.target, "apply", "-f", str(EXAMPLE), "--dry-run")
    assert result.code == 0, result.err
    assert result.lines[0] == "plan: create org acme"
    assert all(line.startswith("plan: ") for line in result.lines[:-1])
    assert result.lines[-1] == ("dry run: 11 to create, 0 to update, 0 to delete; "
                                "nothing was changed")
    assert await db.fetchval("SELECT count(*) FROM orgs") == 0


async def test_a_file_that_is_not_yaml_exits_2_without_calling_the_server(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("orgs:\n  - id: acme\n   display_name: [unclosed\n")
    result = await cli(NOWHERE, "apply", "-f", str(broken))
    assert result.code == 2
    assert f"{broken} is not valid YAML" in result.err and "line 3" in result.err


async def test_a_file_that_is_not_a_declaration_exits_2(tmp_path):
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("orgs: [{id: acme}]\npolices: []\n")
    result = await cli(NOWHERE, "apply", "-f", str(wrong))
    assert result.code == 2
    assert f"{wrong} is not a valid Warden declaration" in result.err
    assert "polices" in result.err
    octal = tmp_path / "octal.yaml"
    octal.write_text("orgs: [{id: 007}]\n")
    result = await cli(NOWHERE, "apply", "-f", str(octal))
    assert result.code == 2 and "quote them" in result.err
    missing = await cli(NOWHERE, "apply", "-f", str(tmp_path / "absent.yaml"))
    assert missing.code == 2 and "absent.yaml" in missing.err


async def test_an_invalid_policy_exits_1_naming_the_field(warden, db, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("limit: 600}", "limit: 0}"))
    result = await cli(warden.target, "apply", "-f", str(bad))
    assert result.code == 1
    assert "INVALID_ARGUMENT" in result.err
    assert "  policies[2].rate_limit.limit: must be between 1 and" in result.err
    assert await db.fetchval("SELECT count(*) FROM orgs") == 0


async def test_keys_create_list_revoke(warden, client):
    assert (await cli(warden.target, "apply", "-f", str(EXAMPLE))).code == 0
    created = await cli(warden.target, "keys", "create", "--app", "acme-search", "--name", "ci",
                        "--model", "gpt-4o-mini", "gpt-4o", "--expires-in", "3600")
    assert created.code == 0, created.err
    key_id = created.lines[0].removeprefix("id:").strip()
    plaintext = created.lines[1].removeprefix("key:").strip()
    assert key_id.startswith("key_") and plaintext.startswith("wk_")
    assert "shown once" in created.err
    reply = await client.warden.Authorize(authorize_request(plaintext, "r1"))
    assert reply.identity.api_key_id == key_id

    listed = await cli(warden.target, "keys", "list", "--app", "acme-search")
    assert listed.code == 0, listed.err
    row = next(line for line in listed.lines if line.startswith(key_id)).split()
    assert row[2:6] == ["active", "-", "ci", "gpt-4o-mini,gpt-4o"]

    revoked = await cli(warden.target, "keys", "revoke", key_id)
    assert revoked.code == 0, revoked.err
    assert revoked.out.startswith(f"revoked {key_id} (app acme-search) at ")
    listed = await cli(warden.target, "keys", "list", "--app", "acme-search")
    assert next(line for line in listed.lines if line.startswith(key_id)).split()[2] == "revoked"

    unknown = await cli(warden.target, "keys", "revoke", "key_nope")
    assert unknown.code == 1 and "NOT_FOUND" in unknown.err


async def test_keys_rotate(warden):
    assert (await cli(warden.target, "apply", "-f", str(EXAMPLE))).code == 0
    created = await cli(warden.target, "keys", "create", "--app", "acme-search")
    old_id = created.lines[0].removeprefix("id:").strip()
    rotated = await cli(warden.target, "keys", "rotate", old_id, "--grace", "60")
    assert rotated.code == 0, rotated.err
    new_id = rotated.lines[0].removeprefix("id:").split()[0]
    assert new_id != old_id and f"(replaces {old_id})" in rotated.lines[0]
    assert rotated.lines[1].removeprefix("key:").strip().startswith("wk_")
    listed = await cli(warden.target, "keys", "list", "--app", "acme-search")
    states = {line.split()[0]: line.split()[2] for line in listed.lines[1:]}
    assert states == {old_id: "grace", new_id: "active"}


async def test_policies_list(warden):
    assert (await cli(warden.target, "apply", "-f", str(EXAMPLE))).code == 0
    result = await cli(warden.target, "policies", "list")
    assert result.code == 0, result.err
    assert [line.split() for line in result.lines] == [
        ["ID", "SCOPE", "TYPE", "MODE"],
        ["acme-models", "org:acme", "model_access", "enforce"],
        ["acme-support-bot-rpm", "app:acme-support-bot", "rate_limit", "enforce"],
        ["acme-support-routing", "team:acme-support", "routing", "enforce"],
        ["alice-rph", "user:alice", "rate_limit", "dry_run"]]
    scoped = await cli(warden.target, "policies", "list", "--scope", "user:alice")
    assert [line.split()[0] for line in scoped.lines] == ["ID", "alice-rph"]
    bad = await cli(warden.target, "policies", "list", "--scope", "galaxy:alice")
    assert bad.code == 2 and "KIND one of org, team, app, user, api_key" in bad.err


async def test_providers_off_list_on(warden, db):
    off = await cli(warden.target, "providers", "off", "openai", "--model", "gpt-4o",
                    "--reason", "incident 42")
    assert off.code == 0, off.err
    assert off.lines == ["openai (model gpt-4o, every org) is off: incident 42"]
    assert await db.fetch("SELECT provider, model, org_id, enabled, reason"
                          " FROM provider_switches") == [
        ("openai", "gpt-4o", "", False, "incident 42")]
    listed = await cli(warden.target, "providers", "list")
    assert listed.code == 0, listed.err
    assert listed.lines[1].split()[:5] == ["openai", "gpt-4o", "*", "off", "incident"]

    on = await cli(warden.target, "providers", "on", "openai", "--model", "gpt-4o")
    assert on.code == 0, on.err
    assert on.lines == ["openai (model gpt-4o, every org) is on"]
    listed = await cli(warden.target, "providers", "list")
    assert listed.lines[1].split()[:4] == ["openai", "gpt-4o", "*", "on"]
    assert (await cli(warden.target, "providers", "off", "openai")).code == 2  # --reason


async def test_the_admin_token_comes_from_the_data_directory(warden, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    env = {"WARDEN_DATA_DIR": str(data)}
    missing = await cli(warden.target, "policies", "list", token=None, env=env)
    assert missing.code == 2
    assert "no admin token" in missing.err and str(data / "admin-token") in missing.err

    (data / "admin-token").write_text(ADMIN_TOKEN + "\n")
    found = await cli(warden.target, "policies", "list", token=None, env=env)
    assert found.code == 0, found.err
    from_env = await cli(warden.target, "policies", "list", token=None,
                         env={"WARDEN_ADMIN_TOKEN": ADMIN_TOKEN})
    assert from_env.code == 0, from_env.err

    wrong = await cli(warden.target, "policies", "list", token="wrong")
    assert wrong.code == 1
    assert "UNAUTHENTICATED" in wrong.err and "reason: ADMIN_TOKEN_INVALID" in wrong.err
