"""On Redis Cluster a script (or MULTI) may only touch keys of one hash slot. Every script the
portal runs gets its KEYS from the same functions production calls, for a sample organization
and key, and they all land in one slot. No Redis needed: the slot is CRC16 of the hash tag."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from redis.crc import key_slot

from apikeys import cache as apikey_cache
from metering.limits import keys

REPO = Path(__file__).resolve().parent.parent
ORG, KEY = 4242, 77
DAY, MONTH = "2026-11-27", "2026-11"


def _slots(names: list[str]) -> set[int]:
    return {key_slot(name.encode()) for name in names}


def _script_keys() -> dict[str, list[str]]:
    """KEYS of every script, as the calling code builds them."""
    from django.core.cache import cache

    from inference import inflight

    org_base, key_base = keys.org_base(ORG), keys.key_base(ORG, KEY)
    limits = keys.script_keys(org_base, key_base, DAY, MONTH)
    make = getattr(cache, "make_and_validate_key", cache.make_key)
    public_id = "pk_sample"
    return {
        "admit.lua": limits,
        "settle.lua": limits,
        # metering.recording: the spool's claim and give-back (KEYS: spool, claim, claims)
        "CLAIM_LUA": [keys.spool(), keys.spool_claim("host-1-abcd"), keys.spool_claims()],
        "UNCLAIM_LUA": [keys.spool(), keys.spool_claim("host-1-abcd"), keys.spool_claims()],
        "FORGET_LUA": [keys.journal_index()],
        # metering.services.limits_rebuild: one period counter; one window's four keys
        "SET_AT_LEAST": [keys.period(org_base, "tpd", DAY, MONTH)],
        "ADD_TO_WINDOW": keys.window_keys(key_base),
        "PUBLISH_LUA": [inflight.routers_inflight_key()],
        # core.cache.set_if_newer: the key cache's entry and its version
        "_SET_IF_NEWER": [
            make(apikey_cache.entry_key(public_id)),
            make(apikey_cache._version_key(public_id)),
        ],
    }


@pytest.mark.parametrize("script", sorted(_script_keys()))
def test_a_scripts_keys_share_one_slot(script):
    names = _script_keys()[script]
    assert names and len(_slots(names)) == 1, {name: key_slot(name.encode()) for name in names}


def test_an_admission_touches_its_organizations_slot_only():
    """The organization's counters, its keys' counters and its journal entries: one tag."""
    org_slot = key_slot(keys.org_base(ORG).encode())
    for key_id in (None, KEY, KEY + 1):
        names = keys.script_keys(keys.org_base(ORG), keys.key_base(ORG, key_id), DAY, MONTH)
        assert _slots(names) == {org_slot}
    assert key_slot(keys.refused(keys.key_base(ORG, KEY), 1).encode()) == org_slot
    # another organization's admissions are free to live on another node
    assert key_slot(keys.org_base(ORG + 1).encode()) != org_slot


def _scripts_in_code() -> set[str]:
    """Every Lua script of the portal: the .lua files and module-level strings that call
    redis.call, so a new script cannot skip the test above."""
    found = {path.name for path in REPO.glob("metering/limits/*.lua")}
    for folder in ("accounts", "apikeys", "catalog", "core", "inference", "metering", "ops"):
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in tree.body:
                if (
                    isinstance(node, ast.Assign)
                    and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)
                    and "redis.call" in node.value.value
                ):
                    found.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return found


def test_every_script_in_the_code_is_checked():
    assert _scripts_in_code() == set(_script_keys())
