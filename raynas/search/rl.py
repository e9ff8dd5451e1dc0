"""A policy-gradient controller (Zoph & Le, 2017, "Neural Architecture Search with Reinforcement
Learning"; Pham et al., 2018, ENAS), asynchronous.

The controller is a small recurrent network (a GRU cell, in torch) that emits a configuration
one decision at a time. It needs no description of the space of its own: the space's
define-by-run interface (:meth:`raynas.spaces.Space.suggest`) asks a *policy trial* for each
decision by name (``suggest_categorical``, ``suggest_int``, ``suggest_float``), in the order the
space draws them, so a repeated block's length (``arch.stages.len``) comes before its blocks, a
conditional key is asked for only when its condition holds, and a sub-space option's keys only
when that option was chosen. Each answer is one step of the controller:

* the step's input is a learned embedding of the decision's name plus the embedding of the
  previous step's action (a learned start vector for the first step);
* the GRU state then goes through the decision's own output head (one per decision name,
  created the first time the name is asked for) to a softmax over its actions;
* a choice has one action per option; an int with at most :data:`MAX_VALUES` values one action
  per value; a larger int range and a continuous float are split into ``float_bins`` bins of
  equal width (on a log scale for log domains), the action is a bin and the value is drawn
  uniformly inside it (log-uniformly for log domains; a stepped float snaps to its grid). There is
  no Gaussian head: a bin's probability is what the policy learns about a number.

Output heads start at zero, so the first policy is uniform over every decision: the search
starts as random search and moves away from it as rewards come in.

Learning is REINFORCE with a moving-average baseline and an entropy bonus, one Adam step per
finished trial, as soon as it finishes (trials in flight were sampled from older policies;
their log-probabilities are recomputed under the current one when they finish):

* reward: the best value of the objective the trial reached (negated when minimising); a trial
  the scheduler stopped early keeps what it reached;
* advantage: (reward - baseline) / scale, clipped to +-:data:`ADVANTAGE_CLIP`, where the
  baseline is an exponential moving average of the rewards (``baseline_decay``), corrected for
  its start at zero as Adam's moments are, and the scale is the standard deviation of every
  reward so far, so the defaults behave the same for an accuracy in 0..1 and a percentage (the
  first trial's advantage is 0);
* a failed or rejected trial (or one that never reported the objective) gets the worst reward:
  one scale below the worst reward seen so far (an advantage of -1 before any trial has
  reported); it moves neither the baseline nor the scale;
* loss: -advantage * log p(actions) - ``entropy_weight`` * entropy (summed over the trial's
  decisions).

Earlier trials (``search.warm_start``) and given points (``search.points``) are replayed
through the policy (:meth:`Space.params` answers each decision) and learned from the same way;
candidates a prescreen screened out are forgotten.

A configuration suggested before is drawn again (up to :data:`DUPLICATE_TRIES` times), then
replaced by a uniform sample (origin ``random``), which is learned from like any other trial.

Every piece of state is plain data (the weights and Adam's state as tensors, the torch
generator's state as a byte tensor, the baseline and counters as numbers), so ``save`` and
``restore`` continue the same sequence of suggestions after a resume. All randomness comes from
the searcher's own ``torch.Generator``; torch's global generator is never used.

Example:
    >>> from raynas.spaces import Space
    >>> searcher = RLSearcher(Space({"depth": {"int": [1, 6]}}), metric="score", mode="max")
    >>> config = searcher.suggest("t1")
    >>> 1 <= config["depth"] <= 6, config["_raynas"]["how"]
    (True, 'policy')
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any, Sequence

import torch

from raynas.experiment import loss_sign
from raynas.search.searchers import SpaceSearcher, _finite
from raynas.spaces import Space

__all__ = ["RLSearcher", "build_rl", "MAX_VALUES"]

#: An int domain with at most this many values gets one action per value; a larger one is binned.
MAX_VALUES = 16
#: Policy samples tried for a configuration not suggested before, then a uniform sample instead.
DUPLICATE_TRIES = 20
#: Advantages (in units of the reward scale) are clipped to this, so one outlier cannot swing the policy.
ADVANTAGE_CLIP = 3.0
#: Gradients are clipped to this norm for the same reason.
GRAD_CLIP = 5.0

# Parameter names of the controller's core (the rest are per decision: d<i>.<part>).
_CORE = ("w_ih", "w_hh", "b_ih", "b_hh", "start")
_PARTS = ("name", "action", "head_w", "head_b")


class RLSearcher(SpaceSearcher):
    """REINFORCE over an autoregressive GRU policy; see the module docstring for the method.

    Args:
        space: The search space.
        metric: Objective metric (Tune sets it through ``set_search_properties`` otherwise).
        mode: ``"max"`` or ``"min"``.
        seed: Seed of the searcher's torch generator; with the same completion order, the same
            seed gives the same suggestions. ``None`` draws one.
        lr: Adam's learning rate (one step per finished trial).
        entropy_weight: Weight of the entropy bonus (rewards are in units of their scale).
        baseline_decay: Decay of the reward's moving average, in [0, 1).
        hidden_size: Width of the GRU state and of the embeddings.
        float_bins: Bins of a continuous float or of an int range of more than
            :data:`MAX_VALUES` values.

    Raises:
        ValueError: A parameter is out of range (the experiment file is checked earlier, by the
            registry; this guards the Python API).

    Example:
        >>> from raynas.spaces import Space
        >>> searcher = RLSearcher(Space({"x": {"choice": [1, 2, 3]}}), metric="score", mode="max", seed=0)
        >>> for i in range(30):
        ...     config = searcher.suggest(f"t{i}")
        ...     searcher.on_trial_complete(f"t{i}", {"score": float(config["x"] == 3)})
        >>> searcher.probabilities([])["x"][2] > 0.5
        True
    """

    name = "rl"

    def __init__(
        self,
        space: Space,
        metric: str | None = None,
        mode: str | None = None,
        seed: int | None = 0,
        *,
        lr: float = 0.02,
        entropy_weight: float = 0.05,
        baseline_decay: float = 0.5,
        hidden_size: int = 32,
        float_bins: int = 8,
    ):
        checks = (
            ("lr", lr, 0.0, False, None), ("entropy_weight", entropy_weight, 0.0, True, None),
            ("baseline_decay", baseline_decay, 0.0, True, 1.0), ("hidden_size", hidden_size, 1, True, None),
            ("float_bins", float_bins, 2, True, None),
        )
        for label, value, low, closed, high in checks:
            integer = label in ("hidden_size", "float_bins")
            ok = (isinstance(value, int) if integer else isinstance(value, (int, float))) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and (value >= low if closed else value > low) and (high is None or value < high)
            if not ok:
                bound = f"{'>=' if closed else '>'} {low:g}" + (f" and < {high:g}" if high is not None else "")
                raise ValueError(f"rl: {label} must be {'an integer' if integer else 'a number'} {bound}, got {value!r}")
        super().__init__(space, metric, mode, seed)
        self.lr = float(lr)
        self.entropy_weight = float(entropy_weight)
        self.baseline_decay = float(baseline_decay)
        self.hidden_size = int(hidden_size)
        self.float_bins = int(float_bins)
        self.decisions: list[tuple[str, int]] = []  # (name, actions), in the order they were first asked for
        self.index: dict[str, int] = {}  # name -> position in decisions
        self.actions: dict[str, list[tuple[str, int]]] = {}  # trial_id -> its decisions' actions, until it finishes
        self.seen: set[str] = set()  # JSON keys of every config suggested
        self.baseline: float | None = None
        self.reward_ema = 0.0
        self.reward_stats = [0, 0.0, 0.0]  # Welford: count, mean, sum of squared deviations
        self.worst: float | None = None  # worst reward of a trial that reported
        self.history: list[tuple[str, float | None, float]] = []  # (trial_id, reward, advantage) per update
        self.num_updates = 0
        self.num_failed = 0
        self.num_duplicates = 0  # suggestions that fell back to a uniform sample
        self._generator = torch.Generator()
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(int(seed))
        self.params: dict[str, torch.Tensor] = {}
        h = self.hidden_size
        bound = 1 / math.sqrt(h)
        for name, shape, scale in (
            ("w_ih", (3 * h, h), bound), ("w_hh", (3 * h, h), bound), ("b_ih", (3 * h,), bound),
            ("b_hh", (3 * h,), bound), ("start", (h,), 0.1),
        ):
            self.params[name] = self._uniform(shape, scale)
        self._optimizer = torch.optim.Adam([self.params[k] for k in _CORE], lr=self.lr)

    # -- persistence: live torch objects become plain data (and back)
    _LIVE = ("_generator", "_optimizer")

    def get_state(self) -> dict:
        state = {k: v for k, v in super().get_state().items() if k not in self._LIVE}
        state["params"] = {k: v.detach().clone() for k, v in self.params.items()}
        state["generator_state"] = self._generator.get_state()
        state["optimizer_state"] = self._optimizer.state_dict()
        return state

    def set_state(self, state: dict) -> None:
        state = dict(state)
        generator_state = state.pop("generator_state")
        optimizer_state = state.pop("optimizer_state")
        params = state.pop("params")
        super().set_state(state)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self._generator = torch.Generator()
        self._generator.set_state(generator_state)
        # Adam's state refers to parameters by position: rebuild the groups in the same order.
        self._optimizer = torch.optim.Adam([self.params[k] for k in _CORE], lr=self.lr)
        for i in range(len(self.decisions)):
            self._optimizer.add_param_group({"params": [self.params[f"d{i}.{p}"] for p in _PARTS]})
        self._optimizer.load_state_dict(optimizer_state)

    def __getstate__(self) -> dict:
        # Tune pickles the searcher with the Tuner (tuner.pkl); a torch.Generator cannot be.
        state = {k: v for k, v in self.__dict__.items() if k not in self._LIVE}
        state["generator_state"] = self._generator.get_state()
        state["optimizer_state"] = self._optimizer.state_dict()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({k: v for k, v in state.items() if k not in ("generator_state", "optimizer_state", "params")})
        self.set_state({"generator_state": state["generator_state"], "optimizer_state": state["optimizer_state"],
                        "params": state["params"]})

    # -- the controller
    def _uniform(self, shape: tuple, scale: float) -> torch.Tensor:
        return (torch.rand(shape, generator=self._generator) * 2 - 1).mul_(scale).requires_grad_(True)

    def _decision(self, name: str, n: int) -> int:
        """Position of decision ``name`` (``n`` actions), creating its embedding and head."""
        key = name if name not in self.index or self.decisions[self.index[name]][1] == n else f"{name}#{n}"
        if key not in self.index:
            i = len(self.decisions)
            h = self.hidden_size
            self.params[f"d{i}.name"] = self._uniform((h,), 0.1)
            self.params[f"d{i}.action"] = self._uniform((n, h), 0.1)
            # A zero head: every decision starts uniform, so the first suggestions are random search.
            self.params[f"d{i}.head_w"] = torch.zeros((n, h), requires_grad=True)
            self.params[f"d{i}.head_b"] = torch.zeros((n,), requires_grad=True)
            self._optimizer.add_param_group({"params": [self.params[f"d{i}.{p}"] for p in _PARTS]})
            self.decisions.append((key, n))
            self.index[key] = i
        return self.index[key]

    def _step(self, state: torch.Tensor, previous: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One GRU step for decision ``i``: (new state, logits over its actions)."""
        p = self.params
        x = p[f"d{i}.name"] + previous
        gi = p["w_ih"] @ x + p["b_ih"]
        gh = p["w_hh"] @ state + p["b_hh"]
        r_i, z_i, n_i = gi.chunk(3)
        r_h, z_h, n_h = gh.chunk(3)
        r = torch.sigmoid(r_i + r_h)
        z = torch.sigmoid(z_i + z_h)
        new = torch.tanh(n_i + r * n_h)
        state = (1 - z) * new + z * state
        return state, p[f"d{i}.head_w"] @ state + p[f"d{i}.head_b"]

    def _replay(self, actions: Sequence[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Log-probability and entropy of ``actions`` under the current policy (with gradients),
        and each step's probabilities."""
        state = torch.zeros(self.hidden_size)
        previous = self.params["start"]
        log_prob = torch.zeros(())
        entropy = torch.zeros(())
        probs = []
        for key, action in actions:
            i = self.index[key]
            state, logits = self._step(state, previous, i)
            logp = torch.log_softmax(logits, dim=0)
            log_prob = log_prob + logp[action]
            entropy = entropy - (logp.exp() * logp).sum()
            probs.append(logp.exp())
            previous = self.params[f"d{i}.action"][action]
        return log_prob, entropy, probs

    def probabilities(self, actions: Sequence[tuple[str, int]]) -> dict[str, list[float]]:
        """The policy's probabilities at each decision of ``actions``, and at the next one.

        With ``[]``, the first decision's distribution (``{name: [p, ...]}``); with a trial's
        recorded actions, every step's. For tests and reports.
        """
        with torch.no_grad():
            _, _, probs = self._replay(actions)
            out = {self.decisions[self.index[k]][0].split("#")[0]: p.tolist() for (k, _), p in zip(actions, probs)}
            if not actions and self.decisions:
                state, logits = self._step(torch.zeros(self.hidden_size), self.params["start"], 0)
                out[self.decisions[0][0]] = torch.softmax(logits, dim=0).tolist()
            return out

    # -- suggestions
    def _next(self, trial_id: str) -> dict:
        for _ in range(DUPLICATE_TRIES):
            trial = _PolicyTrial(self, "policy")
            config = self.space.suggest(trial)
            if _key(config) not in self.seen:
                self.last_origin = {"how": "policy"}
                return self._remember(trial_id, config, trial.actions)
        # The policy keeps proposing trials already made: a uniform sample explores elsewhere.
        self.num_duplicates += 1
        for _ in range(DUPLICATE_TRIES):
            trial = _PolicyTrial(self, "uniform")
            config = self.space.suggest(trial)
            if _key(config) not in self.seen:
                break  # a small space may run out: repeats are allowed then
        self.last_origin = {"how": "random"}
        return self._remember(trial_id, config, trial.actions)

    def _remember(self, trial_id: str, config: dict, actions: list) -> dict:
        self.seen.add(_key(config))
        self.actions[trial_id] = actions
        return config

    # -- learning
    def _completed(self, trial_id: str, config: dict | None, result: dict | None, failed: bool, best: float | None) -> None:
        actions = self.actions.pop(trial_id, None)
        if actions is None and config is not None:
            actions = self._replayed(config)  # a given point (search.points): learned from too
        if actions is None:  # not one of ours (or lost before a restore)
            return
        self._learn(trial_id, actions, None if failed else best)

    def _learn(self, trial_id: str, actions: list, value: float | None) -> None:
        """One REINFORCE step from a finished trial (``value`` None: failed or rejected)."""
        if value is None:
            self.num_failed += 1
            reward = None if self.worst is None else self.worst - self._scale()
            advantage = -1.0 if reward is None else (reward - self.baseline) / self._scale()
        else:
            reward = -loss_sign(self._mode or "max") * value
            count, mean, m2 = self.reward_stats
            count += 1
            delta = reward - mean
            mean += delta / count
            m2 += delta * (reward - mean)
            self.reward_stats = [count, mean, m2]
            self.worst = reward if self.worst is None else min(self.worst, reward)
            advantage = 0.0 if self.baseline is None else (reward - self.baseline) / self._scale()
            # An exponential moving average corrected for its start at zero (as Adam's moments):
            # the mean of the first rewards, then more and more the recent ones. A baseline
            # started at the first reward instead stays low for long after a poor first trial,
            # every later trial then looks good whatever it chose, and the policy collapses onto
            # its first choices (tests/search/test_rl.py, the better choice's probability).
            self.reward_ema = self.baseline_decay * self.reward_ema + (1 - self.baseline_decay) * reward
            self.baseline = self.reward_ema / (1 - self.baseline_decay**count)
        self._step_policy(trial_id, actions, reward, advantage)

    def _step_policy(self, trial_id: str, actions: list, reward: float | None, advantage: float) -> None:
        """The REINFORCE step itself, for one trial's actions and advantage."""
        advantage = max(-ADVANTAGE_CLIP, min(ADVANTAGE_CLIP, advantage))
        self.history.append((trial_id, reward, advantage))
        self.num_updates += 1
        if not actions:
            return  # a space of constants: nothing to learn
        log_prob, entropy, _ = self._replay(actions)
        loss = -advantage * log_prob - self.entropy_weight * entropy
        self._optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.params.values()), GRAD_CLIP)
        self._optimizer.step()

    def _scale(self) -> float:
        count, mean, m2 = self.reward_stats
        std = math.sqrt(m2 / count) if count > 1 else 0.0
        # A floor relative to the rewards' size: identical rewards must not divide by zero.
        return max(std, 1e-9 * max(1.0, abs(mean)))

    # -- prescreen
    def screened_out(self, trial_id: str, score: float) -> None:
        """A candidate a prescreen (``search.prescreen``) scored below another: forgotten. A
        proxy score is on no scale the rewards share, and several screened-out candidates per
        trained trial, each told as a failure, would outweigh the rewards of the trials."""
        super().screened_out(trial_id, score)
        self.actions.pop(trial_id, None)

    # -- warm start
    #: Folders whose policy this controller started from: their trials are in it already.
    adopted: tuple = ()

    def adopt(self, saved: dict, *, same_data: bool, source: str) -> str | None:
        """Starts from an earlier RL search's policy when the spaces match (the same space, and
        the same ``hidden_size`` and ``float_bins``): its weights, decisions and, on the same
        data, its baseline and reward scale. Its trials then only mark their configurations as
        seen in :meth:`warm_start`; they are learned already. A fresh Adam takes the steps."""
        state = saved.get("state", {}) if isinstance(saved, dict) else {}
        state = state.get("inner", state)  # a prescreened search saves its searcher inside
        if (saved.get("space") != self.space.to_dict() or state.get("hidden_size") != self.hidden_size
                or state.get("float_bins") != self.float_bins or "params" not in state or self.num_updates):
            return None
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in state["params"].items()}
        self.decisions = [tuple(d) for d in state["decisions"]]
        self.index = dict(state["index"])
        self._optimizer = torch.optim.Adam([self.params[k] for k in _CORE], lr=self.lr)
        for i in range(len(self.decisions)):
            self._optimizer.add_param_group({"params": [self.params[f"d{i}.{p}"] for p in _PARTS]})
        if same_data:
            for key in ("baseline", "reward_ema", "reward_stats", "worst"):
                setattr(self, key, copy.deepcopy(state[key]))
        self.adopted = (*self.adopted, source)
        learned = state.get("num_updates", 0)
        return (f"rl: starts from the policy of {source} ({learned} updates"
                + (", with its baseline and reward scale)" if same_data else "; other data: its baseline is not used)"))

    def warm_start(self, priors: list) -> str:
        """Replays earlier trials through the policy, one REINFORCE step each, in order.

        Each prior's configuration is answered decision by decision (the values
        :meth:`Space.params` gives, as ``optuna.trial.FixedTrial`` would). A trial on this
        search's data is learned from as if this search had run it: its ``value`` is its reward
        (None: failed or rejected, the worst reward; a trial stopped early counts with the value
        it reached), and it joins the baseline and the rewards' scale. Trials on other data score
        on another scale, so only their order is used: their advantages are their rewards
        standardised among themselves (failed ones one unit below the worst), and they leave the
        baseline and the scale to this search's trials. A configuration the space cannot replay
        is skipped. The updates are part of the state, so a resumed search keeps them. Trials of a
        folder whose policy the controller adopted (:meth:`adopt`) are in it already: they only
        mark their configurations as seen.
        """
        replayed = failed = skipped = 0
        in_policy = [p for p in priors if p.source.split("/")[0] in self.adopted]
        self.seen.update(_key(p.config) for p in in_policy)
        priors = [p for p in priors if p.source.split("/")[0] not in self.adopted]
        other = [(k, p) for k, p in enumerate(priors) if not getattr(p, "same_data", True)]
        rewards = [-loss_sign(self._mode or "max") * v for _, p in other if (v := _finite(p.value)) is not None]
        mean = sum(rewards) / len(rewards) if rewards else 0.0
        spread = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards)) if len(rewards) > 1 else 0.0
        for k, prior in enumerate(priors):
            actions = self._replayed(prior.config)
            if actions is None:
                skipped += 1
                continue
            self.seen.add(_key(prior.config))
            value = _finite(prior.value)
            if getattr(prior, "same_data", True):
                self._learn(f"prior-{k}", actions, value)
            else:
                reward = None if value is None else -loss_sign(self._mode or "max") * value
                if reward is None:
                    advantage = (min(rewards) - mean) / spread - 1 if spread else -1.0
                else:
                    advantage = (reward - mean) / spread if spread else 0.0
                self._step_policy(f"prior-{k}", actions, reward, advantage)
            replayed += 1
            failed += value is None
        if in_policy and not priors:
            return f"rl: the {len(in_policy)} earlier trials are in the policy it started from"
        text = f"rl: {replayed} earlier trials replayed through the policy ({failed} as failed"
        if other:
            text += f"; {len(other)} on other data, by their order only"
        text += ")"
        if in_policy:
            text += f"; {len(in_policy)} more are in the policy it started from"
        return text + (f", {skipped} skipped (not replayable in this space)" if skipped else "")

    def _replayed(self, config: dict) -> list | None:
        """The actions that make the controller emit ``config`` (None: not a config of the space)."""
        try:
            trial = _PolicyTrial(self, "replay", self.space.params(config))
            if self.space.suggest(trial) != config:
                return None
        except (KeyError, ValueError, TypeError, StopIteration):
            return None
        return trial.actions


class _PolicyTrial:
    """An Optuna-trial-like object whose ``suggest_*`` calls are the controller's steps.

    ``mode``: ``policy`` samples each action from the controller, ``uniform`` uniformly (a
    fallback sample whose actions are still recorded), ``replay`` takes the value from
    ``answers`` (a warm start). Every mode records ``(decision, action)`` in :attr:`actions`.
    """

    def __init__(self, searcher: RLSearcher, mode: str, answers: dict | None = None):
        self.searcher, self.mode, self.answers = searcher, mode, answers or {}
        self.actions: list[tuple[str, int]] = []
        self.state = torch.zeros(searcher.hidden_size)
        self.previous = searcher.params["start"]

    def _act(self, name: str, n: int, given: int | None = None) -> int:
        s = self.searcher
        i = s._decision(name, n)
        key = s.decisions[i][0]
        with torch.no_grad():
            self.state, logits = s._step(self.state, self.previous, i)
            if given is not None:
                action = given
            elif self.mode == "uniform":
                action = int(torch.randint(n, (1,), generator=s._generator))
            else:
                action = int(torch.multinomial(torch.softmax(logits, dim=0), 1, generator=s._generator))
            self.previous = s.params[f"d{i}.action"][action]
        self.actions.append((key, action))
        return action

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.searcher._generator))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        given = None
        if self.mode == "replay":
            given = next(i for i, c in enumerate(choices) if type(c) is type(self.answers[name]) and c == self.answers[name])
        return choices[self._act(name, len(choices), given)]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        count = (high - low) // step + 1
        given = self.answers[name] if self.mode == "replay" else None
        if count <= MAX_VALUES:
            action = self._act(name, count, None if given is None else (given - low) // step)
            return low + step * action
        bins = _Bins(low, high + 1, log, self.searcher.float_bins)
        action = self._act(name, bins.n, None if given is None else bins.of(given))
        if given is not None:
            return given
        value = math.floor(bins.draw(action, self._uniform()))
        value = low + step * ((value - low) // step)
        return min(high - (high - low) % step, max(low, value))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        given = self.answers[name] if self.mode == "replay" else None
        if step is not None:
            count = int(math.floor((high - low) / step + 1e-9)) + 1
            if count <= MAX_VALUES:
                action = self._act(name, count, None if given is None else int(round((given - low) / step)))
                return round(low + action * step, 12)
        bins = _Bins(low, high, log, self.searcher.float_bins)
        action = self._act(name, bins.n, None if given is None else bins.of(given))
        if given is not None:
            return given
        value = bins.draw(action, self._uniform())
        if step is not None:
            value = round(low + step * round((value - low) / step), 12)
        return min(high, max(low, value))


class _Bins:
    """``n`` equal bins over ``[low, high)``, on a log scale when ``log``."""

    def __init__(self, low: float, high: float, log: bool, n: int):
        self.log, self.n = log, n
        self.a, self.b = (math.log(low), math.log(high)) if log else (low, high)

    def draw(self, action: int, u: float) -> float:
        x = self.a + (action + u) * (self.b - self.a) / self.n
        return math.exp(x) if self.log else x

    def of(self, value: float) -> int:
        x = math.log(value) if self.log else value
        return min(self.n - 1, max(0, int((x - self.a) / (self.b - self.a) * self.n)))


def _key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def build_rl(spec: Any) -> RLSearcher:
    """The searcher for a validated experiment, with the objective's metric and mode (Tune
    calls ``set_search_properties`` only with a ``param_space``, which raynas does not pass)."""
    return RLSearcher(
        spec.space,
        metric=spec.objective.metric,
        mode=spec.objective.mode.value,
        seed=spec.search.seed,
        **spec.search.options,
    )
