"""core.sharding: which replica attests which node, and when it may start."""

from __future__ import annotations

from collections import Counter

from attestation.core.sharding import (
    MAX_VIEW,
    Member,
    Sighting,
    acked,
    alive,
    format_view,
    incarnation,
    live_members,
    owner_of,
    parse_view,
    sighted,
)

NODES = [f"node-{i}" for i in range(3000)]


def test_nodes_spread_evenly_over_the_replicas() -> None:
    counts = Counter(owner_of(n, ["v-a", "v-b", "v-c"]) for n in NODES)
    assert set(counts) == {"v-a", "v-b", "v-c"}
    assert all(800 < c < 1200 for c in counts.values()), counts


def test_a_replica_joining_moves_only_the_nodes_it_takes() -> None:
    before = {n: owner_of(n, ["v-a", "v-b"]) for n in NODES}
    after = {n: owner_of(n, ["v-a", "v-b", "v-c"]) for n in NODES}
    moved = [n for n in NODES if before[n] != after[n]]
    assert all(after[n] == "v-c" for n in moved)
    assert 800 < len(moved) < 1200  # about a third


def test_a_replica_leaving_moves_only_its_own_nodes() -> None:
    before = {n: owner_of(n, ["v-a", "v-b", "v-c"]) for n in NODES}
    after = {n: owner_of(n, ["v-a", "v-c"]) for n in NODES}
    assert all(before[n] == "v-b" for n in NODES if before[n] != after[n])


def test_the_owner_does_not_depend_on_the_order_of_the_members() -> None:
    assert all(owner_of(n, ["v-a", "v-b"]) == owner_of(n, ("v-b", "v-a")) for n in NODES[:100])
    assert owner_of("node-1", []) is None


def test_a_replica_starts_only_once_every_live_peer_applied_this_incarnation() -> None:
    me = incarnation("v-c", "t2")
    peers = [Member("v-a", "t0", view=frozenset({me})), Member("v-b", "t1")]
    assert not acked("v-c", "t2", peers)
    peers[1] = Member("v-b", "t1", view=frozenset({me, incarnation("v-a", "t0")}))
    assert acked("v-c", "t2", peers)
    # an acknowledgement of an earlier incarnation (before a pause) does not count
    assert not acked("v-c", "t3", peers)
    assert acked("v-c", "t3", [Member("v-c", "t3")])  # alone


def test_views_round_trip_and_hostile_views_acknowledge_nobody() -> None:
    view = format_view(["v-b@t1", "v-a@t0", "v-a@t0"])
    assert view == "v-a@t0,v-b@t1"
    assert parse_view(view) == frozenset({"v-a@t0", "v-b@t1"})
    assert parse_view(None) == parse_view(7) == parse_view("") == frozenset()
    assert parse_view("garbage,,x") == frozenset()
    assert len(parse_view(",".join(f"v{i}@t" for i in range(1000)))) == MAX_VIEW


def test_a_peer_is_alive_while_its_lease_moves_on_this_replicas_clock() -> None:
    first = sighted(None, "r1", 100.0)
    assert sighted(first, "r1", 102.9) is first  # unchanged: still the first sighting
    assert alive(first, 102.9, 3.0)
    assert not alive(first, 103.0, 3.0)
    moved = sighted(first, "r2", 103.5)
    assert moved == Sighting("r2", 103.5)
    assert alive(moved, 106.0, 3.0)


def test_live_members_are_those_with_a_recent_sighting() -> None:
    members = {"v-a": Member("v-a", "t0"), "v-b": Member("v-b", "t1"), "v-c": Member("v-c", "t")}
    sightings = {"v-a": Sighting("r", 10.0), "v-b": Sighting("r", 5.0)}
    assert set(live_members(members, sightings, 12.0, 3.0)) == {"v-a"}
