"""Tests of the build lifecycle table in `runner.jobs`."""

from __future__ import annotations

import itertools

import pytest

from runner.exceptions import IllegalTransition, RunnerError
from runner.jobs import TRANSITIONS, Event, QueuePolicy, UntrustedBuild, transition
from webhooks.build import BuildState

Q, R = BuildState.QUEUED, BuildState.RUNNING
S, F, E, C = BuildState.SUCCEEDED, BuildState.FAILED, BuildState.ERRORED, BuildState.CANCELLED

# Written out by hand from the lifecycle in the issue, independently of the module.
LEGAL: dict[tuple[BuildState, Event], BuildState] = {
    (Q, Event.START): R,
    (Q, Event.CANCEL): C,
    (R, Event.SUCCEED): S,
    (R, Event.FAIL): F,
    (R, Event.ERROR): E,
    (R, Event.CANCEL): C,
    (R, Event.RECOVER_REQUEUE): Q,
    (R, Event.RECOVER_ERROR): E,
}

ALL_PAIRS = list(itertools.product(BuildState, Event))


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS)
def test_transition_matches_the_lifecycle_for_every_state_and_event(
    state: BuildState, event: Event
) -> None:
    """Every pair of state and event either follows the lifecycle or raises IllegalTransition."""
    expected = LEGAL.get((state, event))
    if expected is None:
        with pytest.raises(IllegalTransition) as caught:
            transition(state, event)
        assert caught.value.state is state
        assert caught.value.event == event.value
    else:
        assert transition(state, event) is expected


def test_transitions_table_has_exactly_the_legal_edges() -> None:
    """The table holds the eight lifecycle edges and nothing else."""
    edges = {
        (state, event): target
        for state, row in TRANSITIONS.items()
        for event, target in row.items()
    }
    assert edges == LEGAL
    assert set(TRANSITIONS) == set(BuildState)


@pytest.mark.parametrize("state", [s for s in BuildState if s.is_final])
def test_transition_never_leaves_a_final_state(state: BuildState) -> None:
    """No event moves a final build; the error suggests a retry instead."""
    for event in Event:
        with pytest.raises(IllegalTransition, match="retry"):
            transition(state, event)


def test_transition_recovery_edges_leave_running_only() -> None:
    """Start-up recovery turns a running build into a queued or an errored one."""
    assert transition(R, Event.RECOVER_REQUEUE) is Q
    assert transition(R, Event.RECOVER_ERROR) is E
    with pytest.raises(IllegalTransition):
        transition(Q, Event.RECOVER_REQUEUE)


def test_transition_every_state_is_reachable_from_queued() -> None:
    """Walking the table from queued reaches all six states."""
    seen = {Q}
    frontier = [Q]
    while frontier:
        state = frontier.pop()
        for target in TRANSITIONS[state].values():
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(BuildState)


def test_illegal_transition_names_the_build_and_is_a_runner_error() -> None:
    """The error says which build and which event, and belongs to the runner tree."""
    with pytest.raises(RunnerError, match=r"build 42 is succeeded: the event 'cancel'"):
        transition(S, Event.CANCEL, build_id=42)


def test_queue_policy_counts_running_builds_and_skips_waiting_ones() -> None:
    """Running builds take room first; a waiting build takes none, so others still run."""
    policy = QueuePolicy(max_untrusted_per_author=1, max_untrusted_per_repo=2)

    def build(build_id: int, author: str, running: bool = False) -> UntrustedBuild:
        return UntrustedBuild(build_id, ("github", author), ("github", "o/r"), running)

    admitted = dict(
        policy.admissions([build(5, "bob"), build(2, "eve", True), build(3, "eve"), build(4, "al")])
    )
    assert admitted[3].startswith("waiting: 1 untrusted builds of eve")
    assert admitted[4] == ""
    assert "max_untrusted_per_repo = 2" in admitted[5]
