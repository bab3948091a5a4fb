"""Routing decision latency and assignments per second, against a plain sort-and-pick.

The routing state (workflows/routing_state.py) is loaded with real domain events: a
tenant with QUEUES queues, AGENTS agents of mixed skills and capacities, and WAITING
conversations waiting. Then a steady stream runs: each round some conversations arrive,
some agents finish work, the engine decides, and each decision is played back as the
events the write side records (Offered, WorkOffered, then Assigned and WorkTaken when
the agent accepts). Measured:

- decision latency: one ``decide`` call that makes one offer (p50, p99);
- assignments/s: decisions plus applying their four events, over the whole stream;
- the baseline, in the same run on the same data: for each decision, sort every waiting
  conversation (priority, then wait) and scan every agent for the longest-idle eligible
  one with room (what a first version without indexes would do).

Run: ``./dev bench routing [--agents 2000] [--waiting 10000] [--decisions 3000]``.
The write side (the events' transaction) is not in these figures: it is the event
store's cost, measured by bench/ingest.py.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contact_centre.conversations import Conversation
from contact_centre.interaction import Channel
from contact_centre.privacy import Sealed
from contact_centre.staff import Agent, AgentPresence, Queue
from workflows.routing_state import Decision, RoutingState

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CHANNELS = [Channel.VOICE, Channel.WEBCHAT, Channel.EMAIL, Channel.SMS]
SKILLS = ["billing", "tech", "sales", "norwegian", "german", "vip", "returns", "loans"]


@dataclass
class World:
    state: RoutingState
    tenant: UUID
    agents: dict[UUID, Agent]
    queues: list[Queue]
    conversations: dict[UUID, Conversation]
    rng: random.Random
    now: datetime

    def apply(self, *aggregates: Any) -> None:
        for aggregate in aggregates:
            self.state.apply_all(aggregate.collect_events())


def build_world(agents: int, waiting: int, queues: int, seed: int) -> World:
    rng = random.Random(seed)
    world = World(RoutingState(), uuid4(), {}, [], {}, rng, T0)
    for n in range(queues):
        channels = rng.sample(CHANNELS, rng.randint(1, 3))
        queue = Queue.create(uuid4(), world.tenant, f"Queue {n}", channels, T0)
        required = [f"{s}:{rng.randint(1, 3)}" for s in rng.sample(SKILLS, rng.randint(0, 2))]
        queue.change_settings(
            {"required_skills": required, "priority": rng.choice([0, 10, 50])}, T0
        )
        world.queues.append(queue)
        world.apply(queue)
    for _ in range(agents):
        skills = [f"{s}:{rng.randint(1, 5)}" for s in rng.sample(SKILLS, rng.randint(1, 5))]
        agent = Agent.create(uuid4(), world.tenant, Sealed("agent:x", "x"), None, skills, T0)
        agent.change_capacity(
            {
                "voice": rng.choice([0, 1]),
                "webchat": rng.randint(0, 4),
                "email": rng.randint(0, 6),
                "sms": rng.randint(0, 3),
            },
            T0,
        )
        world.agents[agent.id] = agent
        world.apply(agent)
    for n in range(waiting):
        arrive(world, T0 + timedelta(milliseconds=n))
    # every agent comes on line at a different moment, busy at first: the backlog waits
    for n, agent in enumerate(world.agents.values()):
        agent.change_presence(AgentPresence.BUSY, None, T0 + timedelta(milliseconds=n))
        world.apply(agent)
    return world


def arrive(world: World, at: datetime) -> Conversation:
    queue = world.rng.choice(world.queues)
    channel = world.rng.choice(queue.channels)
    conversation = Conversation.open(
        uuid4(), world.tenant, channel, uuid4(), Sealed("c:x", "x"), at
    )
    conversation.queue(queue.id, queue.priority, "new", at)
    world.conversations[conversation.id] = conversation
    world.apply(conversation)
    return conversation


def play(world: World, decision: Decision) -> float:
    """What the write side records for an offer that the agent accepts; returns the time
    the routing state took to apply those events."""
    conversation = world.conversations[decision.conversation_id]
    agent = world.agents[decision.agent_id]
    conversation.offer(agent.id, world.now + timedelta(seconds=20), world.now)
    agent.receive_offer(conversation.id, conversation.channel.value, world.now)
    conversation.assign(agent.id, "bench", world.now)
    agent.take_work(conversation.id, conversation.channel.value, world.now)
    events = [*conversation.collect_events(), *agent.collect_events()]
    t = time.perf_counter()
    world.state.apply_all(events)
    return time.perf_counter() - t


def finish_some(world: World, count: int) -> None:
    busy = [a for a in world.agents.values() if a.work and not a.offered]
    for agent in world.rng.sample(busy, min(count, len(busy))):
        conversation_id = next(iter(agent.work))
        conversation = world.conversations.pop(conversation_id)
        conversation.change_status(_resolved(), "bench", world.now)
        agent.release_work(conversation_id, "resolved", world.now)
        world.apply(conversation, agent)


def _resolved() -> Any:
    from contact_centre.conversations import ConversationStatus

    return ConversationStatus.RESOLVED


def run_engine(world: World, decisions: int, arrivals_per_round: int) -> dict[str, float]:
    """Agents become available one by one (as they finish their set-up), while work keeps
    arriving and finishing: every decision is timed alone."""
    latencies: list[float] = []
    routing_time = 0.0  # deciding, and applying the decisions' events to the state
    made = 0
    started = time.perf_counter()
    agents = list(world.agents.values())
    world.rng.shuffle(agents)
    pending = iter(agents)
    rounds = 0
    while made < decisions:
        rounds += 1
        world.now += timedelta(milliseconds=200)
        for _ in range(arrivals_per_round):
            arrive(world, world.now)
        finish_some(world, arrivals_per_round)
        world.state.retired.clear()  # what the feed does after each batch
        agent = next(pending, None)
        if agent is not None:
            agent.change_presence(AgentPresence.AVAILABLE, None, world.now)
            world.apply(agent)
        while made < decisions:
            t = time.perf_counter()
            found = world.state.decide(world.now, limit=1)
            latencies.append(time.perf_counter() - t)
            if not found:
                latencies.pop()
                break
            routing_time += latencies[-1] + play(world, found[0])
            made += 1
        if agent is None and rounds > decisions * 4:
            break
    result = summary(latencies, made, routing_time)
    result["stream_per_s"] = made / (time.perf_counter() - started)
    return result


def run_baseline(world: World, decisions: int) -> dict[str, float]:
    """Sort-and-pick over the same state, without indexes: per decision, sort the waiting
    work and the available agents, then take the first work with an eligible agent."""
    state = world.state
    latencies: list[float] = []
    routing_time = 0.0
    made = 0
    started = time.perf_counter()
    while made < decisions:
        t = time.perf_counter()
        waiting = sorted(
            (
                w
                for w in state.work.values()
                if w.waiting and w.offered_to is None and w.pending_agent is None
            ),
            key=lambda w: (-w.priority, w.waiting_since, str(w.id)),
        )
        agents = sorted(
            (a for a in state.agents.values() if a.available),
            key=lambda a: (a.idle_since, str(a.id)),
        )
        choice = None
        for work in waiting:
            agent = next(
                (a for a in agents if work.queue_id in a.queues and a.free(work.channel) > 0),
                None,
            )
            if agent is not None:
                choice = (work, agent)
                break
        latencies.append(time.perf_counter() - t)
        if choice is None:
            latencies.pop()
            break
        work, agent = choice
        spent = latencies[-1] + play(world, Decision(world.tenant, work.id, agent.id, 20))
        routing_time += spent
        made += 1
    result = summary(latencies, made, routing_time)
    result["stream_per_s"] = made / (time.perf_counter() - started)
    return result


def summary(latencies: list[float], made: int, elapsed: float) -> dict[str, float]:
    ordered = sorted(latencies) or [0.0]
    return {
        "decisions": made,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "assignments_per_s": made / elapsed if elapsed else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--baseline-decisions", type=int, default=200)
    parser.add_argument(
        "--arrivals", type=int, default=5, help="arrivals (and completions) per round"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-freeze", action="store_true", help="leave the loaded heap to gc")
    args = parser.parse_args(argv)

    t = time.perf_counter()
    world = build_world(args.agents, args.waiting, args.queues, args.seed)
    if not args.no_freeze:
        # The bench keeps every aggregate it builds events with; without this the cyclic
        # collector rescans them all now and then, and those pauses are the bench's own.
        gc.collect()
        gc.freeze()
    print(
        f"loaded {args.agents} agents, {args.queues} queues, {args.waiting} waiting"
        f" from events in {time.perf_counter() - t:.1f} s"
    )
    engine = run_engine(world, args.decisions, args.arrivals)
    waiting_now = sum(1 for w in world.state.work.values() if w.waiting)
    baseline = run_baseline(world, args.baseline_decisions)
    print(f"still waiting after the engine's run: {waiting_now}")
    print(f"{'':10}{'decisions':>10}{'p50 ms':>10}{'p99 ms':>10}{'assign/s':>10}{'stream/s':>10}")
    for name, row in (("engine", engine), ("baseline", baseline)):
        print(
            f"{name:10}{row['decisions']:>10.0f}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}"
            f"{row['assignments_per_s']:>10.0f}{row['stream_per_s']:>10.0f}"
        )
    print(
        "assign/s: deciding plus applying each decision's events to the routing state;"
        " stream/s: the whole loop, with building every event through the aggregates"
    )
    if baseline["p50_ms"] and engine["p50_ms"]:
        print(
            f"engine vs baseline: p50 {baseline['p50_ms'] / engine['p50_ms']:.0f}x faster,"
            f" p99 {baseline['p99_ms'] / engine['p99_ms']:.0f}x faster"
        )
    targets = engine["p99_ms"] < 5 and engine["assignments_per_s"] >= 1000
    print(f"targets (p99 < 5 ms, >= 1000 assignments/s): {'met' if targets else 'NOT met'}")


if __name__ == "__main__":
    main()
