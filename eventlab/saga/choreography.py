"""Choreography: the same long transaction with no coordinator, services reacting to events.

Each service listens for the events it cares about and answers with a
command of its own: "when ``StockReserved`` commits, charge the payment";
"when ``PaymentFailed`` commits, release the stock". Nobody holds the
saga's state: it is spread over the services' streams, tied together only by
the correlation id every event and command carries.

Two things a coordinator gives for free have to be built in here:

- A participant that gives up (its command is declined, runs out of
  attempts, or expires before it ran) produces no event by itself, so the others would never hear of
  it. :meth:`Choreography.on_failure` makes it announce the failure as an
  event (``PaymentFailed``) that others react to.
- Reactions live on the bus, which delivers after the commit: a crash in
  between loses them. A choreography therefore catches up with the stored
  history when it starts (every reaction command has an id derived from the
  event that caused it, so one already sent is not sent again, even if the
  reaction would build it differently now) and announces
  failures that a crash left unannounced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..command_log import DEAD, EXPIRED, REJECTED, decode_command
from ..commands import Command
from ..errors import SagaError
from ..events import Event, check_name
from ..scheduler import CommandScheduler

if TYPE_CHECKING:
    from ..events import RecordedEvent
    from ..executor import CommandOutcome
    from ..store import EventStore

# event -> a command, (command type, payload), several of them, or None.
Reaction = Callable[["RecordedEvent"], Any]
_GAVE_UP = (DEAD, REJECTED, EXPIRED)
_STATUS, _ERROR = 4, 11  # columns of a command row (see eventlab.command_log.COMMAND_SCHEMA)


def reaction_id(command_type: str, event: RecordedEvent) -> str:
    """The id of the command an event causes: ``<CommandType>:<stream_id>@<version>``."""
    return f"{command_type}:{event.stream_id}@{event.version}"


def failure_event_id(command_id: str) -> str:
    """The id of the event announcing that command ``command_id`` failed for good."""
    return f"{command_id}:failed"


class Choreography:
    """Services reacting to each other's events, wired on one store's bus and scheduler.

    Parameters
    ----------
    store : EventStore
        Whose bus carries the events.
    scheduler : CommandScheduler
        Runs the reaction commands (on the same store).
    name : str
        Names the bus subscription (``choreography.<name>``; a new choreography
        of the same name takes it over) and the first event's stream
        (``<name>-<transaction id>``, see :meth:`start`).

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore(clock=el.SimulatedClock("2024-05-01"))
    >>> executor = el.CommandExecutor(store)
    >>> @executor.handler("Reserve")
    ... def reserve(command, ctx):
    ...     return {f"stock-{command.correlation_id}": [el.Event("Reserved", {})]}
    >>> scheduler = el.CommandScheduler(store, executor)
    >>> flow = el.Choreography(store, scheduler, name="checkout")
    >>> flow.on("CheckoutRequested", lambda event: ("Reserve", {}))
    >>> flow.start("CheckoutRequested", {"sku": "MUG"}, transaction_id="t-1")
    't-1'
    >>> flow.run()
    1
    >>> [(e.stream_id, e.type) for e in store.read_all()]
    [('checkout-t-1', 'CheckoutRequested'), ('stock-t-1', 'Reserved')]
    """

    def __init__(self, store: EventStore, scheduler: CommandScheduler, *, name: str = "saga"):
        if not isinstance(scheduler, CommandScheduler) or scheduler.store is not store:
            raise SagaError(
                "a choreography needs an el.CommandScheduler on the same store, e.g. "
                "el.saga.Choreography(store, el.CommandScheduler(store, executor))"
            )
        check_name("name", name)
        self.store = store
        self.scheduler = scheduler
        self.name = name
        self._reactions: dict[str, list[tuple[str | None, Reaction, Any]]] = {}
        self._failures: dict[str, tuple[str, str]] = {}  # command type -> (event, service)
        self._subscription = None
        self._recovered = False
        scheduler.executor.subscribe(self._heard)

    # ------------------------------------------------------------------ wiring

    def on(
        self,
        event_type: str,
        react: Reaction,
        *,
        service: str | None = None,
        once_per: Callable[[RecordedEvent], str] | None = None,
    ) -> None:
        """When an ``event_type`` event commits, send the command(s) ``react(event)`` returns.

        ``react`` returns an :class:`~eventlab.Command`, a ``(command type,
        payload)`` pair, a list of them, or None for nothing. Each command gets
        the id ``<CommandType>:<key>`` and the event's correlation id; the key
        is ``once_per(event)``, by default ``<stream>@<version>`` (the event
        itself: a redelivered event sends it once). Give e.g.
        ``once_per=lambda e: e.causation_id`` to react once to all the events
        one command caused. A command whose id was sent already is not sent
        again, even when ``react`` builds it differently this time (another
        event of the same key, or a payload with the time it was sent).
        ``service`` only names who reacts (in the command's context).
        """
        check_name("event_type", event_type)
        if not callable(react):
            raise SagaError(f"the reaction to {event_type!r} must be callable, got {react!r:.80}")
        if once_per is not None and not callable(once_per):
            raise SagaError(f"once_per must be a function of the event, got {once_per!r:.80}")
        self._reactions.setdefault(event_type, []).append((service, react, once_per))
        if self._subscription is not None:  # wired already: listen to the new type too
            self.store.bus.unsubscribe(self._subscription)
            self._subscription = None
            self._listen()

    def on_failure(self, command_type: str, event_type: str, *, service: str) -> None:
        """Announce a ``command_type`` command that failed for good (declined, out of
        attempts, or expired) as an ``event_type`` event.

        The event goes to stream ``<service>-<correlation id>`` with data
        ``command_id``, ``command_type``, ``payload``, ``error`` and ``declined``;
        its id is derived from the command's, so it is announced once.
        """
        check_name("command_type", command_type)
        check_name("event_type", event_type)
        check_name("service", service)
        self._failures[command_type] = (event_type, service)

    # ------------------------------------------------------------------ running

    def start(
        self, event_type: str, data: Mapping[str, Any] | None = None, *, transaction_id: str
    ) -> str:
        """Begin a flow: append its first event to ``<name>-<transaction id>`` (idempotent).

        Returns the transaction id, which every reaction carries as correlation id.
        """
        check_name("transaction_id", transaction_id)
        self._listen()
        event = Event(
            event_type,
            dict(data or {}),
            {"correlation_id": transaction_id},
            event_id=f"{self.name}-{transaction_id}:started",
        )
        self.store.append(f"{self.name}-{transaction_id}", [event])
        return transaction_id

    def run(self, until_idle: bool = True) -> int:
        """Run the scheduler (the reactions' commands and what they cause); returns how
        many commands it took."""
        self._listen()
        return self.scheduler.run(until_idle=until_idle)

    def _listen(self) -> None:
        """Subscribe (once), catching up with the stored history first."""
        if not self._recovered:
            self._recovered = True
            self.recover()
        if self._subscription is not None or not self._reactions:
            return
        bus = self.store.bus
        name = f"choreography.{self.name}"
        if name in bus._subscriptions:  # an earlier choreography of this name: take over
            bus.unsubscribe(name)
        self._subscription = bus.subscribe(
            self._react,
            types=sorted(self._reactions),
            name=name,
            from_position=0,
        )

    def _react(self, event: RecordedEvent) -> None:
        known = self.scheduler.log._known
        for service, react, once_per in self._reactions.get(event.type, ()):
            made = react(event)
            key = f"{event.stream_id}@{event.version}" if once_per is None else once_per(event)
            for command in _commands(made, event):
                command_id = f"{command.type}:{key}"
                # Sent already (a redelivered event, the catch-up at start, or another
                # event of the same once_per key): the reaction is done. Not submitted
                # again, since its payload may differ this time (the time it was sent,
                # the event that triggered it), and the command log refuses an id
                # resubmitted with another payload: that would fail the subscription.
                if known(command_id):
                    continue
                context = {**(command.context or {}), "caused_by": event.event_id}
                if service is not None:
                    context["service"] = service
                self.scheduler.submit(
                    Command(
                        command.type,
                        command.payload,
                        command_id=command_id,
                        correlation_id=event.correlation_id or command.correlation_id,
                        deadline=command.deadline,
                        context=context,
                    )
                )

    # ------------------------------------------------------------------ failures

    def _heard(self, outcome: CommandOutcome) -> None:
        # The scheduler tells when a command gives up for good: rejected, expired, or
        # dead (after the failed or timed-out run that used up its attempts, which
        # it announces first: that one is not final, so only ``dead`` is heard).
        if outcome.status not in _GAVE_UP or not self._failures:
            return
        log = self.scheduler.log
        row = log.row(outcome.command_id)
        if row is None or row[_STATUS] not in _GAVE_UP:  # the scheduler will try it again
            return
        self._announce(decode_command(row), row[_STATUS], row[_ERROR])

    def _announce(self, command: Command, status: str, error: str | None) -> None:
        wanted = self._failures.get(command.type)
        if wanted is None:
            return
        event_type, service = wanted
        correlation = command.correlation_id or command.command_id
        data = {
            "command_id": command.command_id,
            "command_type": command.type,
            "payload": command.payload,
            "error": error,
            "declined": status == REJECTED,
        }
        event = Event(
            event_type,
            data,
            {"correlation_id": correlation, "causation_id": command.command_id},
            event_id=failure_event_id(command.command_id),
        )
        self.store.append(f"{service}-{correlation}", [event])

    def recover(self) -> int:
        """Announce the failures a crash left unannounced; returns how many."""
        if not self._failures:
            return 0
        rows = (
            self.store._cursor()
            .execute(
                "SELECT command_id FROM commands WHERE list_contains($1, type) "
                "AND list_contains($2, status) AND command_id || ':failed' NOT IN "
                "(SELECT event_id FROM events) ORDER BY seq",
                [sorted(self._failures), list(_GAVE_UP)],
            )
            .fetchall()
        )
        log = self.scheduler.log
        for (command_id,) in rows:
            row = log.row(command_id)
            self._announce(decode_command(row), row[_STATUS], row[_ERROR])
        return len(rows)

    def __repr__(self) -> str:
        return (
            f"Choreography({self.name!r}, reacts_to={sorted(self._reactions)}, "
            f"announces={sorted(self._failures)})"
        )


def _commands(made: Any, event: RecordedEvent) -> Iterable[Command]:
    if made is None:
        return []
    items = made if isinstance(made, list) else [made]
    commands = []
    for item in items:
        if isinstance(item, Command):
            commands.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            commands.append(Command(item[0], dict(item[1])))
        else:
            raise SagaError(
                f"the reaction to {event.type} returned {item!r:.80}; return an el.Command, a "
                f"(command type, payload) pair, a list of them, or None"
            )
    return commands
