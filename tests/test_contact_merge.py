"""Duplicate contacts (`GET /contacts/duplicates`) and merging them (`POST /contacts/{id}/merge`),
on SQLite and on PostgreSQL.

- duplicates are found by email (case and surrounding spaces) and by phone (format variants),
  never across organizations, in a stable order, paged;
- a merge keeps every deal, task and timeline entry, adds one `contact_merged` entry per moved
  deal, fills only the target's empty fields, and deletes the sources;
- every refused merge (validation, missing or foreign ids, roles, If-Match) changes nothing;
- an Idempotency-Key replays a merge instead of running it twice.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.core.contact_keys import email_key, phone_key
from tests.support import Api, User, assert_problem, count_rows, engine_of, snapshot


async def contact(user: User, name: str, **fields: Any) -> dict[str, Any]:
    response = await user.post("/contacts", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def deal(user: User, contact_id: int, title: str) -> int:
    response = await user.post("/deals", json={"contact_id": contact_id, "title": title})
    assert response.status_code == 201, response.text
    deal_id: int = response.json()["id"]
    return deal_id


async def duplicates(user: User, **params: Any) -> dict[str, Any]:
    response = await user.get("/contacts/duplicates", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def groups_of(body: dict[str, Any]) -> list[tuple[str, str, list[int]]]:
    return [
        (group["reason"], group["key"], [c["id"] for c in group["contacts"]])
        for group in body["items"]
    ]


# --- normalisation (no database) ---------------------------------------------------------------


def test_email_keys_ignore_case_and_surrounding_space() -> None:
    assert email_key("  Ann.Lee@Example.COM ") == "ann.lee@example.com"
    assert email_key("STRASSE@x.de") == email_key("strasse@X.DE")
    assert email_key(None) is None
    assert email_key("   ") is None


@pytest.mark.parametrize(
    ("raw", "region", "key"),
    [
        ("+1 415 555 0134", None, "+14155550134"),
        ("+1 (415) 555-0134", None, "+14155550134"),
        ("+14155550134", "DE", "+14155550134"),
        ("+44 20 7946 0958", None, "+442079460958"),
        # Without a country code, only the default region reads it as E.164 ...
        ("(415) 555-0134", "US", "+14155550134"),
        ("030 1234567", "DE", "+49301234567"),
        # ... and without one, it is its digits.
        ("(415) 555-0134", None, "4155550134"),
        ("415.555.0134", None, "4155550134"),
        ("ext only", None, None),
        (None, "US", None),
    ],
)
def test_phone_keys_are_e164_where_they_parse_else_digits(
    raw: str | None, region: str | None, key: str | None
) -> None:
    assert phone_key(raw, region) == key


# --- duplicates ----------------------------------------------------------------------------------


async def test_duplicates_group_by_email_and_phone_variants_within_one_organization(
    any_api: Api,
) -> None:
    owner = await any_api.register()
    member = await any_api.member_of(owner, "member")
    stranger = await any_api.register()
    ann = await contact(owner, "Ann", email="Ann.Lee@example.com", phone="+1 415 555 0134")
    ann2 = await contact(member, "Ann L.", email="ann.lee@EXAMPLE.com")
    ann3 = await contact(owner, "A. Lee", email="ANN.LEE@example.com", phone="+1 (415) 555-0134")
    bob = await contact(owner, "Bob", phone="(415) 555-0199")
    bob2 = await contact(owner, "Bob 2", phone="415.555.0199")
    await contact(owner, "Alone", email="alone@example.com", phone="+44 20 7946 0958")
    await contact(owner, "No details")
    # Another organization's contacts with the same email and phone are not duplicates here.
    await contact(stranger, "Ann elsewhere", email="ann.lee@example.com", phone="+14155550134")

    body = await duplicates(owner)
    assert groups_of(body) == [
        ("email", "ann.lee@example.com", [ann["id"], ann2["id"], ann3["id"]]),
        ("phone", "+14155550134", [ann["id"], ann3["id"]]),
        ("phone", "4155550199", [bob["id"], bob2["id"]]),
    ]
    assert [group["count"] for group in body["items"]] == [3, 2, 2]
    assert body["items"][0]["contacts"][1] == ann2  # contacts as their GET answers them
    assert (body["total"], body["page"], body["page_size"], body["pages"]) == (3, 1, 20, 1)
    # Every member sees the same groups (the contact list's visibility).
    assert (await duplicates(member))["items"] == body["items"]

    stranger_view = await duplicates(stranger)
    assert stranger_view["items"] == []
    assert stranger_view["total"] == 0

    second = await duplicates(owner, page=2, page_size=2)
    assert groups_of(second) == groups_of(body)[2:]
    assert (second["total"], second["pages"]) == (3, 2)
    past_the_end = await duplicates(owner, page=3, page_size=2)
    assert (past_the_end["items"], past_the_end["total"]) == ([], 3)

    # An edit moves a contact out of (and into) a group.
    response = await owner.patch(f"/contacts/{bob2['id']}", json={"phone": "+1 415 555 0134"})
    assert response.status_code == 200, response.text
    assert groups_of(await duplicates(owner)) == [
        ("email", "ann.lee@example.com", [ann["id"], ann2["id"], ann3["id"]]),
        ("phone", "+14155550134", [ann["id"], ann3["id"], bob2["id"]]),
    ]


async def test_duplicates_page_size_is_checked(any_api: Api) -> None:
    owner = await any_api.register()
    for params in ({"page": 0}, {"page_size": 101}, {"page_size": 0}):
        assert_problem(await owner.get("/contacts/duplicates", params=params), 422)


# --- merge ------------------------------------------------------------------------------------


async def activity_count(api: Api, organization_id: int) -> int:
    return await count_rows(engine_of(api), "activities", "organization_id = :o", o=organization_id)


async def test_merging_three_duplicates_keeps_every_deal_and_timeline_entry(any_api: Api) -> None:
    owner = await any_api.register()
    target = await contact(owner, "Ann Lee", email="ann.lee@example.com")
    first = await contact(owner, "Ann", email="ANN.LEE@example.com")  # no phone either
    second = await contact(owner, "A. Lee", email="other@example.com", phone="+1 415 555 0134")
    kept = await deal(owner, target["id"], "Kept")
    moved = [
        await deal(owner, first["id"], "First 1"),
        await deal(owner, first["id"], "First 2"),
        await deal(owner, second["id"], "Second"),
    ]
    for deal_id in (kept, *moved):
        response = await owner.post(
            f"/deals/{deal_id}/activities", json={"type": "comment", "payload": {"text": "hi"}}
        )
        assert response.status_code == 201, response.text
        response = await owner.post("/tasks", json={"deal_id": deal_id, "title": "Call"})
        assert response.status_code == 201, response.text
    engine = engine_of(any_api)
    org = owner.organization_id
    activities_before = await activity_count(any_api, org)
    tasks_before = await count_rows(engine, "tasks", "organization_id = :o", o=org)

    response = await owner.post(
        f"/contacts/{target['id']}/merge", json={"source_ids": [first["id"], second["id"]]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    merged = (await owner.get(f"/contacts/{target['id']}")).json()
    assert body == {
        "contact": merged,
        "merged_contact_ids": [first["id"], second["id"]],
        "moved_deal_ids": moved,
        "filled_fields": ["phone"],
    }
    assert (
        response.headers["etag"] == (await owner.get(f"/contacts/{target['id']}")).headers["etag"]
    )
    # Only the empty field was filled; the target's own email and name stay.
    assert (merged["name"], merged["email"], merged["phone"]) == (
        "Ann Lee",
        "ann.lee@example.com",
        "+1 415 555 0134",
    )

    for source in (first, second):
        assert_problem(await owner.get(f"/contacts/{source['id']}"), 404, "CONTACT_NOT_FOUND")
    deals = (await owner.get("/deals", params={"contact_id": target["id"]})).json()
    assert sorted(item["id"] for item in deals["items"]) == sorted([kept, *moved])
    # Every entry and task is kept; each moved deal has one more entry.
    assert await activity_count(any_api, org) == activities_before + len(moved)
    assert await count_rows(engine, "tasks", "organization_id = :o", o=org) == tasks_before
    timeline = (await owner.get(f"/deals/{moved[2]}/activities")).json()["items"]
    assert [entry["type"] for entry in timeline] == ["contact_merged", "task_created", "comment"]
    assert timeline[0]["payload"] == {
        "from_contact_id": second["id"],
        "to_contact_id": target["id"],
    }
    assert timeline[0]["actor"] == {"type": "user", "id": owner.id}
    kept_timeline = (await owner.get(f"/deals/{kept}/activities")).json()["items"]
    assert "contact_merged" not in [entry["type"] for entry in kept_timeline]

    # No duplicates are left.
    assert (await duplicates(owner))["items"] == []


async def test_a_merge_fills_nothing_the_target_has(any_api: Api) -> None:
    owner = await any_api.register()
    target = await contact(owner, "T", email="t@example.com", phone="+1 415 555 0100")
    source = await contact(owner, "S", email="s@example.com", phone="+1 415 555 0101")
    before = (await owner.get(f"/contacts/{target['id']}")).json()
    response = await owner.post(
        f"/contacts/{target['id']}/merge", json={"source_ids": [source["id"]]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["filled_fields"] == []
    assert response.json()["moved_deal_ids"] == []
    assert (await owner.get(f"/contacts/{target['id']}")).json() == before


async def test_a_merge_fills_the_custom_fields_the_target_has_no_value_for(
    any_api: Api,
) -> None:
    owner = await any_api.register()
    for key in ("linkedin", "twitter"):
        response = await owner.post(
            "/custom-fields",
            json={"entity": "contact", "key": key, "label": key, "type": "text"},
        )
        assert response.status_code == 201, response.text
    target = await contact(owner, "T", custom_fields={"linkedin": "t"})
    first = await contact(owner, "S1", custom_fields={"linkedin": "s1"})
    second = await contact(owner, "S2", custom_fields={"twitter": "s2"})
    response = await owner.post(
        f"/contacts/{target['id']}/merge", json={"source_ids": [first["id"], second["id"]]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["filled_fields"] == ["custom_fields"]
    merged = (await owner.get(f"/contacts/{target['id']}")).json()
    assert merged["custom_fields"] == {"linkedin": "t", "twitter": "s2"}


async def test_refused_merges_change_nothing(any_api: Api) -> None:
    owner = await any_api.register()
    member = await any_api.member_of(owner, "member")
    stranger = await any_api.register()
    target = await contact(owner, "T")
    source = await contact(owner, "S", phone="+1 415 555 0101")
    await deal(owner, source["id"], "D")
    own_target = await contact(member, "Mine")
    own_source = await contact(member, "Mine too", phone="1")
    await deal(owner, own_source["id"], "Not the member's deal")
    foreign = await contact(stranger, "Foreign")
    engine = engine_of(any_api)
    before = await snapshot(engine)

    def merge(user: User, target_id: int, source_ids: Any, **kwargs: Any) -> Any:
        return user.post(f"/contacts/{target_id}/merge", json={"source_ids": source_ids}, **kwargs)

    refused = [
        (await merge(owner, target["id"], []), 422, "VALIDATION_ERROR"),
        (await merge(owner, target["id"], [source["id"], source["id"]]), 422, "VALIDATION_ERROR"),
        (await merge(owner, target["id"], list(range(1, 52))), 422, "VALIDATION_ERROR"),
        (await merge(owner, target["id"], [0]), 422, "VALIDATION_ERROR"),
        (
            await owner.post(f"/contacts/{target['id']}/merge", json={"source_ids": [1], "x": 1}),
            422,
            "VALIDATION_ERROR",
        ),
        (
            await merge(owner, target["id"], [source["id"], target["id"]]),
            400,
            "MERGE_TARGET_IN_SOURCES",
        ),
        (await merge(owner, target["id"], [source["id"], 10**12]), 404, "CONTACT_NOT_FOUND"),
        (await merge(owner, target["id"], [source["id"], foreign["id"]]), 404, "CONTACT_NOT_FOUND"),
        (await merge(owner, foreign["id"], [source["id"]]), 404, "CONTACT_NOT_FOUND"),
        (await merge(stranger, foreign["id"], [target["id"]]), 404, "CONTACT_NOT_FOUND"),
        # A member may not merge others' contacts, nor move others' deals.
        (await merge(member, target["id"], [source["id"]]), 403, "PERMISSION_DENIED"),
        (await merge(member, own_target["id"], [source["id"]]), 403, "PERMISSION_DENIED"),
        (await merge(member, own_target["id"], [own_source["id"]]), 403, "PERMISSION_DENIED"),
        (
            await merge(owner, target["id"], [source["id"]], headers={"If-Match": '"stale"'}),
            412,
            "PRECONDITION_FAILED",
        ),
    ]
    for response, status, code in refused:
        assert_problem(response, status, code)
    assert await snapshot(engine) == before

    # The validation names the field.
    problem = (await merge(owner, target["id"], [source["id"], source["id"]])).json()
    assert problem["errors"][0]["loc"] == ["body", "source_ids"]


async def test_a_member_merges_their_own_contacts_and_deals(any_api: Api) -> None:
    owner = await any_api.register()
    member = await any_api.member_of(owner, "member")
    target = await contact(member, "T")
    source = await contact(member, "S", email="s@example.com")
    deal_id = await deal(member, source["id"], "Mine")
    etag = (await member.get(f"/contacts/{target['id']}")).headers["etag"]
    response = await member.post(
        f"/contacts/{target['id']}/merge",
        json={"source_ids": [source["id"]]},
        headers={"If-Match": etag},
    )
    assert response.status_code == 200, response.text
    assert response.json()["moved_deal_ids"] == [deal_id]
    assert response.json()["contact"]["email"] == "s@example.com"
    assert (await member.get(f"/deals/{deal_id}")).json()["contact_id"] == target["id"]


async def test_an_idempotency_key_replays_a_merge(any_api: Api) -> None:
    owner = await any_api.register()
    target = await contact(owner, "T")
    source = await contact(owner, "S", phone="+1 415 555 0101")
    await deal(owner, source["id"], "D")
    headers = {"Idempotency-Key": "merge-1"}
    path = f"/contacts/{target['id']}/merge"
    first = await owner.post(path, json={"source_ids": [source["id"]]}, headers=headers)
    assert first.status_code == 200, first.text
    engine = engine_of(any_api)
    before = await snapshot(engine)
    again = await owner.post(path, json={"source_ids": [source["id"]]}, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await snapshot(engine) == before
    # Without the key, the same request is a new one: its source is gone by now.
    assert_problem(await owner.post(path, json={"source_ids": [source["id"]]}), 404)
