"""Operations in the database, on SQLite and PostgreSQL: which webhook subscriptions an
execution reaches, listing filters and counts, purging with blobs only the purged use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kasal.db.models import Blob, Execution, User, WebhookSubscription
from kasal.db.purge import expired, purge
from kasal.db.repositories import ExecutionFilter
from kasal.db.teams import SharedRows
from kasal.webhooks import targets_for


async def _user(session, email: str) -> User:
    user = User(email=email, hashed_password="x")
    session.add(user)
    await session.flush()
    return user


def _sub(owner: str, events: list[str], **scope) -> WebhookSubscription:
    return WebhookSubscription(
        owner_id=owner,
        url="https://x.example/h",
        secret="whsec_AA==",
        events=events,
        description="",
        active=scope.pop("active", True),
        **scope,
    )


async def test_webhook_targets_follow_owner_crew_and_schedule(sessions):
    async with sessions() as session, session.begin():
        alice = await _user(session, "a@example.com")
        bob = await _user(session, "b@example.com")
        everything = _sub(alice.id, ["execution_completed"])
        crew = _sub(alice.id, ["task_completed"], crew_id="c" * 32)
        schedule = _sub(alice.id, ["execution_failed"], schedule_id="s" * 32)
        off = _sub(alice.id, ["execution_completed"], active=False)
        others = _sub(bob.id, ["execution_completed"])
        session.add_all([everything, crew, schedule, off, others])
    async with sessions() as session:
        plain = await targets_for(session, alice.id)
        assert [t.subscription_id for t in plain] == [everything.id]
        of_crew = {t.subscription_id for t in await targets_for(session, alice.id, "c" * 32)}
        assert of_crew == {everything.id, crew.id}
        of_run = await targets_for(session, alice.id, "c" * 32, "s" * 32)
        assert {t.subscription_id for t in of_run} == {everything.id, crew.id, schedule.id}
        assert await targets_for(session, None) == []


async def test_webhook_targets_follow_the_executions_group(sessions):
    """Issue 10: a subscription belongs to a group and hears every execution of that group,
    whoever started it; another group's subscriptions never do, even on the same crew id."""
    async with sessions() as session, session.begin():
        alice = await _user(session, "a@example.com")
        bob = await _user(session, "b@example.com")
        team = _sub(alice.id, ["execution_completed"], group_id="g" * 32)
        team_crew = _sub(alice.id, ["task_completed"], group_id="g" * 32, crew_id="c" * 32)
        elsewhere = _sub(bob.id, ["execution_completed"], group_id="h" * 32, crew_id="c" * 32)
        session.add_all([team, team_crew, elsewhere])
    async with sessions() as session:
        # bob started it, in alice's group: the group's subscriptions hear it.
        heard = await targets_for(session, bob.id, "c" * 32, group_id="g" * 32)
        assert {t.subscription_id for t in heard} == {team.id, team_crew.id}
        heard = await targets_for(session, alice.id, group_id="h" * 32)
        assert [t.subscription_id for t in heard] == []
        # An execution in no group (made outside the API) is its owner's alone.
        assert {t.subscription_id for t in await targets_for(session, bob.id, "c" * 32)} == {
            elsewhere.id
        }


async def test_filters_counts_and_purge(sessions):
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        alice = await _user(session, "a@example.com")
        session.add(Blob(id="1" * 64, size=1, data="a"))
        session.add(Blob(id="2" * 64, size=1, data="b"))
        rows = [
            ("Weekly_Report", "completed", now - timedelta(days=40), "1" * 64, None),
            ("weekly-digest", "failed", now - timedelta(days=2), "2" * 64, "s" * 32),
            ("100% done", "running", None, None, None),
            ("other", "completed", now - timedelta(days=1), "2" * 64, None),
        ]
        for index, (name, state, ended, blob, schedule) in enumerate(rows):
            session.add(
                Execution(
                    id=f"{index:032x}",
                    workflow_id=f"w{index}",
                    owner_id=alice.id,
                    crew_name=name,
                    status=state,
                    spec={},
                    inputs={},
                    ended_at=ended,
                    schedule_id=schedule,
                    created_at=now - timedelta(days=50 - index),
                    result={"output_ref": blob, "tasks": []} if blob else None,
                )
            )
    async with sessions() as session:
        rows = SharedRows(session)  # rows of no group: the owner's own
        found, total = await rows.executions(
            [], alice.id, offset=0, limit=10, filters=ExecutionFilter(text="weekly")
        )
        assert total == 2 and {e.crew_name for e in found} == {"Weekly_Report", "weekly-digest"}
        # LIKE wildcards in the text are literal.
        _, underscore = await rows.executions(
            [], alice.id, offset=0, limit=10, filters=ExecutionFilter(text="y_r")
        )
        assert underscore == 1
        _, percent = await rows.executions(
            [], alice.id, offset=0, limit=10, filters=ExecutionFilter(text="100%")
        )
        assert percent == 1
        _, scheduled = await rows.executions(
            [], alice.id, offset=0, limit=10, filters=ExecutionFilter(schedule_id="s" * 32)
        )
        assert scheduled == 1
        _, recent = await rows.executions(
            [],
            alice.id,
            offset=0,
            limit=10,
            filters=ExecutionFilter(created_after=now - timedelta(days=48)),
        )
        assert recent == 2
        assert await rows.execution_counts([], alice.id) == {
            "completed": 2,
            "failed": 1,
            "running": 1,
        }
    old = await expired(sessions, now - timedelta(days=30))
    assert old == [f"{0:032x}"]
    assert await purge(sessions, old + [f"{3:032x}"]) == 2
    async with sessions() as session:
        assert await session.get(Blob, "1" * 64) is None  # only the purged used it
        assert await session.get(Blob, "2" * 64) is not None  # still named by a kept row


def test_standard_webhooks_signature_matches_the_reference_vector():
    from kasal.webhooks import sign, verify

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="  # the spec's example
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": f"v1,bm90IGl0 {signature}",
    }
    assert verify(secret, headers, body, tolerance=10**10)
    assert not verify(secret, headers, body + b" ", tolerance=10**10)  # tampered
    assert not verify(secret, headers, body)  # too old
