"""Compiling a program into one shared ``transitions`` machine that advances plain data.

An instance's state is a *configuration*: the tuple of its active leaf states as dotted paths
(``("planned",)``, or one leaf per region inside a parallel state). Each (program, version) is
compiled once into a ``transitions`` machine with ``auto_transitions=False`` (no ``to_<state>``
backdoors); applying a trigger puts a configuration on a throwaway token, lets the machine
decide, and reads the new configuration back. No machine is ever built per instance, so the
cost of compiling is paid once per process.

The refusals are precise because every check runs as a ``transitions`` condition that notes
why it failed: role, then evidence, then each guard, in that order.

This is the only module that imports ``transitions``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

from transitions import Machine as _FlatMachine
from transitions.extensions.nesting import HierarchicalMachine as _HierarchicalMachine
from transitions.extensions.nesting import NestedState as _NestedState

from workflow.errors import (
    EvidenceInvalid,
    GuardFailed,
    Refused,
    RoleNotAllowed,
    TriggerNotAllowed,
    WorkflowError,
)
from workflow.programs.model import (
    CompareGuard,
    FunctionGuard,
    Guard,
    HappenedGuard,
    Program,
    RegionsFinalGuard,
    State,
    Transition,
)
from workflow.runtime import evidence as _evidence
from workflow.runtime.evidence import EvidenceValue

Configuration = tuple[str, ...]


@dataclass(frozen=True)
class GuardContext:
    """What a registered guard function is told about the transition being attempted."""

    program: str
    program_version: int
    trigger: str
    actor: str
    role: str
    evidence: Mapping[str, EvidenceValue]
    active: Configuration
    instance: int | None = None
    area: str | None = None
    fiscal_year: int | None = None


GuardFunction = Callable[[GuardContext], bool]


@dataclass(frozen=True)
class Step:
    """The outcome of applying a trigger: transition taken, typed evidence, new configuration."""

    transition: Transition
    evidence: dict[str, EvidenceValue]
    before: Configuration
    after: Configuration


@dataclass
class _Attempt:
    """Mutable scratch state for one trigger attempt; conditions write into it."""

    role: str
    raw_evidence: Mapping[str, object]
    happened: Callable[[], Collection[str]]
    functions: Mapping[str, GuardFunction]
    context: dict[str, Any]
    config: Configuration
    failure: Refused | None = None
    typed: dict[str, EvidenceValue] = field(default_factory=dict)

    def fail(self, error: Refused) -> bool:
        if self.failure is None:
            self.failure = error
        return False


class _Token:
    """The stand-in model a machine moves; it lives for one call only."""

    state: Any


class _DotState(_NestedState):
    # State and trigger ids are snake_case, so '_' cannot separate nested names.
    separator = "."


class _DotMachine(_HierarchicalMachine):
    state_cls = _DotState


def _flatten(state: Any) -> Configuration:
    if isinstance(state, str):
        return (state,)
    out: list[str] = []
    for item in state:
        out.extend(_flatten(item))
    return tuple(out)


@dataclass
class _Probe:
    """Scratch state for asking the transitions machine a structural question."""

    force: Transition | None = None  # None: record the order candidates are tried in
    tried: list[Transition] = field(default_factory=list)


class CompiledMachine:
    """One program version compiled for reuse by every instance of it.

    The ``transitions`` machine is the authority on structure: which transitions a trigger
    may take from a configuration, in which order they are tried, and the configuration each
    leads to. Those answers depend only on (configuration, trigger), so they are asked once
    and kept as a *plan*; applying a trigger then runs the checks (role, evidence, guards)
    over the plan's candidates in order. This keeps the hot path free of the machine's
    per-call bookkeeping while its semantics stay the ones ``transitions`` defines.
    """

    def __init__(self, program: Program) -> None:
        self.program = program
        self._by_path: dict[str, State] = {s.path: s for s in program.all_states()}
        self._final = frozenset(p for p, s in self._by_path.items() if s.final)
        self.hierarchical = any(s.parallel for s in program.states)
        self._lock = threading.Lock()
        self._order = {path: i for i, path in enumerate(self._by_path)}
        transitions = [self._spec(t) for t in program.transitions]
        common: dict[str, Any] = dict(
            model=None,
            transitions=transitions,
            initial=program.initial,
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=True,
        )
        self._machine: Any
        if self.hierarchical:
            self._machine = _DotMachine(
                states=[self._state_spec(s) for s in program.states], **common
            )
        else:
            self._machine = _FlatMachine(states=[s.name for s in program.states], **common)
        self._initial = self._enter(program.initial)
        self._triggers_from = lru_cache(maxsize=8192)(self._compute_triggers_from)
        self._plans: dict[tuple[Configuration, str], tuple[tuple[Transition, Configuration], ...]]
        self._plans = {}
        self._static: dict[
            tuple[Configuration, str | None], tuple[tuple[str, tuple[Transition, ...]], ...]
        ]
        self._static = {}
        self._history_triggers = frozenset(
            t.trigger
            for t in program.transitions
            if any(isinstance(g, HappenedGuard) for g in t.guards)
        )

    # -- building

    def _state_spec(self, s: State) -> Any:
        if not s.regions:
            # Finality is tracked here, not by transitions: its final-state callbacks assume
            # a model bound to the machine (0.9.3 fails on `scoped_enter` otherwise).
            return s.name
        return {
            "name": s.name,
            "parallel": [
                {
                    "name": r.name,
                    "initial": r.initial,
                    "children": [self._state_spec(c) for c in r.states],
                }
                for r in s.regions
            ],
        }

    def _spec(self, t: Transition) -> dict[str, Any]:
        return {
            "trigger": t.trigger,
            "source": list(t.sources),
            "dest": t.dest,
            "conditions": [partial(self._probe_condition, t)],
        }

    @staticmethod
    def _probe_condition(t: Transition, event_data: Any) -> bool:
        probe: _Probe = event_data.kwargs["probe"]
        if probe.force is None:
            if t not in probe.tried:
                probe.tried.append(t)
            return False
        return probe.force is t

    def _enter(self, path: str) -> Configuration:
        """The configuration of entering ``path``: its own leaf, or every region's initial."""
        state = self._by_path[path]
        if not state.regions:
            return (path,)
        out: list[str] = []
        for r in state.regions:
            out.extend(self._enter(f"{path}.{r.name}.{r.initial}"))
        return tuple(out)

    def enter(self, path: str) -> Configuration:
        """The configuration of entering state ``path`` (every region at its initial)."""
        return self._enter(path)

    def configuration(self, leaves: Collection[str]) -> tuple[Configuration | None, str | None]:
        """``leaves`` (dotted paths) as a configuration of this program, with every region
        none of them is in entered at its initial state; or (None, why it is not one)."""
        for p in leaves:
            s = self._by_path.get(p)
            if s is None:
                return None, f"{p} is not a state of {self.program.id} v{self.program.version}"
            if s.regions:
                return None, f"{p} is a parallel state, not a leaf"
        tops = sorted({p.split(".", 1)[0] for p in leaves})
        if len(tops) != 1:
            return None, f"active states in {len(tops)} top-level states ({', '.join(tops)})"
        out: list[str] = []
        problem = self._fill(tops[0], set(leaves), out)
        return (None, problem) if problem else (self._normalise(tuple(out)), None)

    def _fill(self, path: str, leaves: set[str], out: list[str]) -> str | None:
        state = self._by_path[path]
        if not state.regions:
            out.append(path)
            return None
        for r in state.regions:
            prefix = f"{path}.{r.name}."
            inside = {p for p in leaves if p.startswith(prefix)}
            if not inside:
                out.extend(self._enter(f"{prefix}{r.initial}"))
                continue
            heads = sorted({prefix + p[len(prefix) :].split(".", 1)[0] for p in inside})
            if len(heads) > 1:
                return f"region {path}.{r.name} would be in {len(heads)} states at once"
            problem = self._fill(heads[0], inside, out)
            if problem:
                return problem
        return None

    # -- asking transitions

    def _run(self, config: Configuration, trigger: str, probe: _Probe) -> Configuration | None:
        token = _Token()
        token.state = list(config) if self.hierarchical and len(config) > 1 else config[0]
        with self._lock:  # a transitions machine keeps per-call scratch state
            if self.hierarchical:
                ok = self._machine.trigger_event(token, trigger, probe=probe)
            else:
                ok = self._machine.events[trigger].trigger(token, probe=probe)
        return self._normalise(_flatten(token.state)) if ok else None

    def plan(
        self, config: Configuration, trigger: str
    ) -> tuple[tuple[Transition, Configuration], ...]:
        """The transitions ``trigger`` may take from ``config``, in the order the machine
        tries them, each with the configuration it leads to."""
        key = (config, trigger)
        found = self._plans.get(key)
        if found is None:
            probe = _Probe()
            self._run(config, trigger, probe)
            steps = []
            for t in probe.tried:
                after = self._run(config, trigger, _Probe(force=t))
                if after is not None:
                    steps.append((t, after))
            found = tuple(steps)
            if len(self._plans) < 200_000:  # bounded: configurations are finite but many
                self._plans[key] = found
        return found

    # -- checks (in this order; the first failure of the first candidate is reported)

    def _check_role(self, attempt: _Attempt, t: Transition) -> bool:
        if attempt.role in t.roles:
            return True
        return attempt.fail(RoleNotAllowed(t.trigger, attempt.role, t.roles))

    def _check_evidence(self, attempt: _Attempt, t: Transition) -> bool:
        try:
            attempt.typed = _evidence.validate(t, attempt.raw_evidence)
        except EvidenceInvalid as e:
            return attempt.fail(e)
        return True

    def _check_guard(self, attempt: _Attempt, t: Transition, g: Guard) -> bool:
        ok = self.guard_holds(g, t, attempt)
        return True if ok else attempt.fail(GuardFailed(t.trigger, g.describe()))

    def guard_holds(self, g: Guard, t: Transition, attempt: _Attempt) -> bool:
        if isinstance(g, HappenedGuard):
            return g.trigger in attempt.happened()
        if isinstance(g, RegionsFinalGuard):
            return self.regions_final(g.state, attempt.config)
        if isinstance(g, CompareGuard):
            return _compare(g, t, attempt.typed)
        return self._call(g, t, attempt)

    def _call(self, g: FunctionGuard, t: Transition, attempt: _Attempt) -> bool:
        fn = attempt.functions.get(g.name)
        if fn is None:
            attempt.fail(GuardFailed(t.trigger, f"guard function {g.name!r} is not registered"))
            return False
        context = {"actor": "", **attempt.context}
        ctx = GuardContext(
            program=self.program.id,
            program_version=self.program.version,
            trigger=t.trigger,
            role=attempt.role,
            evidence=dict(attempt.typed),
            active=attempt.config,
            **context,
        )
        try:
            return bool(fn(ctx))
        except WorkflowError:
            raise
        except Exception as e:
            attempt.fail(
                GuardFailed(t.trigger, f"guard function {g.name!r} raised {type(e).__name__}: {e}")
            )
            return False

    # -- queries

    def initial(self) -> Configuration:
        return self._initial

    def top_state(self, config: Configuration) -> str:
        return config[0].split(".", 1)[0]

    def is_final(self, config: Configuration) -> bool:
        return all(p in self._final for p in config) and self.top_state(config) in self._final

    def regions_final(self, path: str, config: Configuration) -> bool:
        state = self._by_path.get(path)
        if state is None or not state.regions:
            return False
        for r in state.regions:
            prefix = f"{path}.{r.name}."
            leaves = [p for p in config if p.startswith(prefix)]
            if not leaves or not all(p in self._final for p in leaves):
                return False
        return True

    def _compute_triggers_from(self, config: Configuration) -> tuple[str, ...]:
        # Under the lock like every other call into the machine: a nested machine resolves
        # state names by entering scopes it keeps on itself (`with machine(child)`), so a
        # concurrent _run could make it look for a state in the wrong scope.
        with self._lock:
            found = set(self._machine.get_triggers(*config))
        return tuple(t for t in self.program.triggers if t in found)

    def triggers_from(self, config: Configuration) -> tuple[str, ...]:
        """Triggers defined from this configuration, ignoring roles and guards."""
        return self._triggers_from(config)

    def _static_available(
        self, config: Configuration, role: str | None
    ) -> tuple[tuple[str, tuple[Transition, ...]], ...]:
        """Per trigger, the candidates a role may take whose config-only guards hold."""
        key = (config, role)
        found = self._static.get(key)
        if found is None:
            probe = _Attempt(role or "", {}, lambda: (), {}, {}, config)
            out = []
            for trigger in self.triggers_from(config):
                ok = tuple(
                    t
                    for t, _ in self.plan(config, trigger)
                    if (role is None or role in t.roles)
                    and all(
                        self.guard_holds(g, t, probe)
                        for g in t.guards
                        if isinstance(g, RegionsFinalGuard)
                    )
                )
                if ok:
                    out.append((trigger, ok))
            found = tuple(out)
            if len(self._static) < 200_000:
                self._static[key] = found
        return found

    def available(
        self,
        config: Configuration,
        role: str | None = None,
        happened: Callable[[], Collection[str]] | None = None,
    ) -> tuple[str, ...]:
        """Triggers that could fire now: allowed for ``role`` (if given) and with every guard
        that does not depend on evidence (history, regions) holding."""
        out = []
        seen: Collection[str] | None = None
        for trigger, candidates in self._static_available(config, role):
            if trigger not in self._history_triggers:
                out.append(trigger)
                continue
            if seen is None:
                seen = happened() if happened is not None else ()
            if any(
                all(g.trigger in seen for g in t.guards if isinstance(g, HappenedGuard))
                for t in candidates
            ):
                out.append(trigger)
        return tuple(out)

    # -- applying

    def apply(
        self,
        config: Configuration,
        trigger: str,
        role: str,
        evidence: Mapping[str, object] | None = None,
        *,
        happened: Callable[[], Collection[str]] = lambda: (),
        functions: Mapping[str, GuardFunction] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Step:
        """Apply ``trigger`` to ``config``; return the :class:`Step` or raise a :class:`Refused`."""
        if trigger not in self.triggers_from(config):
            raise TriggerNotAllowed(
                trigger,
                self.describe(config),
                self.triggers_from(config),
                known=trigger in self.program.triggers,
            )
        attempt = _Attempt(
            role=role,
            raw_evidence=evidence or {},
            happened=happened,
            functions=functions or {},
            context=dict(context or {}),
            config=config,
        )
        for t, after in self.plan(config, trigger):
            if (
                self._check_role(attempt, t)
                and self._check_evidence(attempt, t)
                and all(self._check_guard(attempt, t, g) for g in t.guards)
            ):
                return Step(transition=t, evidence=attempt.typed, before=config, after=after)
        if attempt.failure is not None:
            raise attempt.failure
        raise TriggerNotAllowed(
            trigger, self.describe(config), self.triggers_from(config), known=True
        )

    def _normalise(self, config: Configuration) -> Configuration:
        # Definition order, so equal configurations are equal tuples (and hash the same).
        return tuple(sorted(config, key=lambda p: self._order.get(p, len(self._order))))

    def describe(self, config: Configuration) -> str:
        if len(config) == 1:
            return config[0]
        top = self.top_state(config)
        return top + " {" + ", ".join(p[len(top) + 1 :] for p in config) + "}"


def _compare(g: CompareGuard, t: Transition, typed: Mapping[str, EvidenceValue]) -> bool:
    left = typed.get(g.field)
    if left is None:
        return True  # nothing recorded, nothing to compare: optional fields stay optional
    if g.other_field is not None:
        right: object = typed.get(g.other_field)
        if right is None:
            return True
    else:
        f = t.field(g.field)
        try:
            right = _evidence.convert(f, g.value) if f is not None else g.value
        except (ValueError, OverflowError):
            return False  # the loader refuses such constants; never crash on one
    try:
        return bool(_OPS[g.op](left, right))
    except TypeError:
        return False


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


_compiled: dict[tuple[str, int, str], CompiledMachine] = {}
_compiled_lock = threading.Lock()


def compile_program(program: Program) -> CompiledMachine:
    """The shared machine of a program version (compiled on first use, then reused)."""
    key = (program.id, program.version, program.content_hash)
    machine = _compiled.get(key)
    if machine is None:
        with _compiled_lock:
            machine = _compiled.get(key)
            if machine is None:
                machine = CompiledMachine(program)
                _compiled[key] = machine
    return machine
