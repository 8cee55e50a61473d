"""`apply_config` upserts plans, pools, routers and models; bad files name the field and
change nothing."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Plan
from catalog.models import CatalogModel, Router, RouterPool

pytestmark = pytest.mark.django_db

with open("config.example.json") as _file:
    EXAMPLE = json.load(_file)


def _write(tmp_path, data, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else data)
    return str(path)


def test_example_file_applies_and_is_idempotent(tmp_path, capsys):
    for _ in range(2):
        call_command("apply_config", "config.example.json")
    assert Plan.objects.count() == 2
    free = Plan.objects.get(name="free")
    assert free.is_default and free.all_models and free.requests_per_month is None
    assert free.requests_per_minute == 60 and free.max_concurrent_requests == 8
    assert RouterPool.objects.count() == 1 and Router.objects.count() == 1
    router = Router.objects.get()
    assert (router.session_id, router.token, router.api_version) == (1, "default-dev-token", "v1")
    assert list(CatalogModel.objects.values_list("public_id", flat=True)) == [
        "cortensor/llama-3.1-8b",
        "cortensor/qwen-2.5-7b",
    ]
    assert "2 plans, 1 pools, 1 routers, 2 models applied" in capsys.readouterr().out


def test_yaml_is_accepted(tmp_path):
    import yaml

    call_command("apply_config", _write(tmp_path, yaml.safe_dump(EXAMPLE), "c.yaml"))
    assert CatalogModel.objects.count() == 2


def test_plan_model_lists_restrict_models(tmp_path):
    data = json.loads(json.dumps(EXAMPLE))
    data["plans"][1]["models"] = ["cortensor/qwen-2.5-7b"]
    call_command("apply_config", _write(tmp_path, data))
    pro = Plan.objects.get(name="pro")
    assert not pro.all_models
    assert list(pro.models.values_list("public_id", flat=True)) == ["cortensor/qwen-2.5-7b"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda d: d["models"][1].update(pool="nowhere"),
            "models[1].pool: no pool named 'nowhere'",
        ),
        (
            lambda d: d["pools"][0]["routers"][0].pop("session_id"),
            "pools[0].routers[0].session_id: required",
        ),
        (
            lambda d: d["plans"][0].update(requests_per_minute="lots"),
            "plans[0].requests_per_minute",
        ),
        (lambda d: d["models"][0].update(chat_template="jinja"), "models[0].chat_template"),
        (lambda d: d["pools"][0]["routers"][0].update(api_version="v9"), "api_version"),
        (lambda d: d.update(extra=[]), "unknown section"),
    ],
)
def test_bad_file_names_the_field_and_applies_nothing(tmp_path, mutate, message):
    data = json.loads(json.dumps(EXAMPLE))
    mutate(data)
    with pytest.raises(CommandError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call_command("apply_config", _write(tmp_path, data))
    assert not Plan.objects.exists() and not RouterPool.objects.exists()


def test_unparseable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{nope")
    with pytest.raises(CommandError, match="is not valid JSON"):
        call_command("apply_config", str(path))
    with pytest.raises(CommandError, match="cannot read"):
        call_command("apply_config", str(tmp_path / "missing.json"))
