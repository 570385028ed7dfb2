"""The latent-to-real action adapter: LAM codes <-> robot commands, fitted on a few labelled episodes.

    adapter = Adapter.load("adapter/")          # loads (and checks) the bundle it was fitted on
    adapter.to_robot(3, image)                  # -> {"action": [dx, ..., gripper], "names": [...]}
    adapter.to_latent(command, image)           # -> the LAM code that command most resembles

Two kinds, both with a forward map (code -> command) and an inverse map (command -> code):
- `lookup` (Genie, Appendix E): per code, the real actions seen with it on labelled transitions;
  forward returns their mean (or one of them, `sample=True`), inverse the code whose mean is nearest.
- `learned`: the lookup plus corrections from small networks over the code's vector and the
  observation's features (LAPA / UniVLA-style heads), forward and inverse, each the mean of an
  ensemble, starting at zero and stopped early on held-aside labelled episodes, so it falls back to
  the lookup where the observation says nothing. The observation is the robot's state and how it
  changed over the last step, where the shards record a state
  (`adapter.to_robot(3, image, state=now, previous_state=before)`),
  else the image: on the arm scenes the state lifted the held-out direction cosine over the lookup's,
  the image features never did. With a state, the networks also train on the unlabelled episodes,
  labelled from how their state moved (pseudo_labels.py).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from robo_genie import bundle as bundle_io
from robo_genie.adapter.pseudo_labels import with_pseudo_labels
from robo_genie.adapter.transitions import Transitions, observation_features, state_observation
from robo_genie.safe_write import write_text_atomic, writing

FORMAT = "robo_genie.adapter/3"     # /3: each network is an ensemble (/2: a state adapter reads the state's change)
KINDS = ("lookup", "learned")
UNITS = {"dx": "m", "dy": "m", "dz": "m", "droll": "rad", "dpitch": "rad", "dyaw": "rad", "gripper": "closed (0-1)"}
HIDDEN = 128
FIT_STEPS = 800
MEMBERS = 5     # networks per ensemble: five averaged replay the arm 0.01-0.02 (of random's error) nearer than one


class AdapterError(ValueError):
    pass


def _mlp(d_in: int, d_out: int) -> nn.Module:
    net = nn.Sequential(nn.LayerNorm(d_in), nn.Dropout(0.2), nn.Linear(d_in, HIDDEN), nn.GELU(),
                        nn.Linear(HIDDEN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, d_out))
    nn.init.zeros_(net[-1].weight)      # starts as the lookup (forward) / a uniform guess (inverse)
    nn.init.zeros_(net[-1].bias)
    return net


class Ensemble(nn.Module):
    """MEMBERS small networks from different starting weights, trained side by side; the output is
    their mean. In closed loop the robot soon reaches states no training episode passed through, where
    one network's correction is partly noise; the mean of several is steadier (NOTES.md, 2026-12-08)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.members = nn.ModuleList(_mlp(d_in, d_out) for _ in range(MEMBERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def _train(net: Ensemble, inputs: torch.Tensor, loss_fn, val: torch.Tensor) -> Ensemble:
    """Full-batch AdamW (labelled sets are hundreds to a few thousand transitions), each member on its
    own loss, keeping the weights at which the ensemble's mean had the lowest loss on held-aside
    episodes (`val` marks them): observation features identify single frames, and a network left to
    run memorises them."""
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.01)
    fit_rows = ~val if val.any() and (~val).any() else torch.ones_like(val)
    best, best_loss, first_loss = copy.deepcopy(net.state_dict()), float("inf"), float("inf")
    for step in range(FIT_STEPS + 1):
        if val.any() and step % 10 == 0:
            net.eval()
            with torch.no_grad():
                loss = float(loss_fn(net(inputs[val]), val))
            if step == 0:
                first_loss = best_loss = loss
            # a correction must beat the lookup (step 0) by 5 % on the held-aside episodes to be kept
            elif loss < min(best_loss, 0.95 * first_loss):
                best, best_loss = copy.deepcopy(net.state_dict()), loss
        if step == FIT_STEPS:
            break
        net.train()
        loss = sum(loss_fn(m(inputs[fit_rows]), fit_rows) for m in net.members)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if val.any():
        net.load_state_dict(best)
    return net.eval()


class Adapter:
    def __init__(self, kind: str, info: dict, tensors: dict[str, torch.Tensor], world=None):
        if kind not in KINDS:
            raise AdapterError(f"adapter kind {kind!r}: expected one of {', '.join(KINDS)}")
        self.kind, self.info, self.t = kind, info, tensors
        self.names = list(info["action_names"])
        self.world = world
        self.mean, self.std = tensors["action_mean"], tensors["action_std"]
        if kind == "learned":
            self.forward_net, self.inverse_net = self._nets()
            self.forward_net.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("forward.")})
            self.inverse_net.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("inverse.")})
            self.forward_net.eval()
            self.inverse_net.eval()

    # -- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(cls, kind: str, data: Transitions, world, action_names: list[str], info: dict | None = None,
            seed: int = 0, unlabelled: Transitions | None = None) -> Adapter:
        """Fit on labelled transitions; `world` gives the code vectors and observation features. The
        `learned` kind's networks also train on `unlabelled` transitions (with the robot's state at
        both ends), pseudo-labelled from the state; the lookup under them keeps to the real labels."""
        actions = torch.from_numpy(data.actions).float()
        std = actions.std(0) if len(actions) > 1 else torch.ones(actions.shape[1])
        tensors = {"action_mean": actions.mean(0), "action_std": torch.where(std > 1e-6, std, torch.ones_like(std))}
        k = world.num_actions
        codes = torch.from_numpy(data.codes).long()
        counts = torch.bincount(codes, minlength=k)
        sums = torch.zeros(k, actions.shape[1]).index_add_(0, codes, actions)
        # an unseen code maps to the average command
        tensors["code_means"] = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None],
                                            tensors["action_mean"])
        tensors["code_counts"] = counts
        tensors["sample_actions"], tensors["sample_codes"] = actions, codes
        info = {"format": FORMAT, "kind": kind, "action_names": list(action_names),
                "units": [UNITS.get(n, "") for n in action_names], "num_actions": k,
                "n_transitions": len(data), "observation": data.observation, **(info or {})}
        if kind != "learned":
            return cls(kind, info, tensors, world)
        if unlabelled is not None and len(unlabelled):
            info["pseudo_labelled_transitions"] = len(unlabelled)
            data = with_pseudo_labels(data, unlabelled)
        with torch.random.fork_rng():       # the same seed, the same adapter; the caller's RNG untouched
            torch.manual_seed(seed)
            return cls._fit_networks(kind, info, tensors, data, world)

    @classmethod
    def _fit_networks(cls, kind: str, info: dict, tensors: dict, data: Transitions, world) -> Adapter:
        # the networks train on every transition, labelled and pseudo-labelled
        actions, codes = torch.from_numpy(data.actions).float(), torch.from_numpy(data.codes).long()
        feats = torch.from_numpy(data.features).float()
        tensors["feature_mean"], tensors["feature_std"] = feats.mean(0), feats.std(0).clamp_min(1e-4)
        adapter = cls(kind, info, {**tensors, **cls._init_nets(world, actions.shape[1], feats.shape[1])}, world)
        x_fwd = adapter._forward_inputs(codes, feats)
        target = (actions - tensors["code_means"][codes]) / adapter.std
        # a quarter of the episodes (when there are several) choose when to stop
        eps = np.unique(data.episodes)
        val = torch.from_numpy(np.isin(data.episodes, eps[1::4] if len(eps) >= 4 else eps[1:2]))
        _train(adapter.forward_net, x_fwd, lambda y, rows: F.mse_loss(y, target[rows]), val)
        x_inv, prior = adapter._inverse_inputs(actions, feats), adapter._lookup_logits(actions)
        _train(adapter.inverse_net, x_inv, lambda y, rows: F.cross_entropy(prior[rows] + y, codes[rows]), val)
        adapter.t |= {f"forward.{n}": v.detach() for n, v in adapter.forward_net.state_dict().items()}
        adapter.t |= {f"inverse.{n}": v.detach() for n, v in adapter.inverse_net.state_dict().items()}
        return adapter

    @staticmethod
    def _init_nets(world, n_actions: int, n_features: int) -> dict[str, torch.Tensor]:
        code_dim = world.lam.code_vectors.shape[1]
        vectors = world.lam.code_vectors.detach().float().cpu()
        # standardised per channel, as the features are: codes a short training left close together
        # must still look different to the network
        tensors = {"code_vectors": (vectors - vectors.mean(0)) / vectors.std(0).clamp_min(1e-6)}
        fwd, inv = Ensemble(code_dim + n_features, n_actions), Ensemble(n_actions + n_features, world.num_actions)
        tensors |= {f"forward.{n}": v for n, v in fwd.state_dict().items()}
        tensors |= {f"inverse.{n}": v for n, v in inv.state_dict().items()}
        return tensors

    def _nets(self) -> tuple[nn.Module, nn.Module]:
        code_dim, n_feat = self.t["code_vectors"].shape[1], self.t["feature_mean"].shape[0]
        return Ensemble(code_dim + n_feat, len(self.names)), Ensemble(len(self.names) + n_feat, self.info["num_actions"])

    def _features(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.t["feature_mean"]) / self.t["feature_std"]

    def _forward_inputs(self, codes: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.t["code_vectors"][codes], self._features(feats)], 1)

    def _inverse_inputs(self, actions: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return torch.cat([(actions - self.mean) / self.std, self._features(feats)], 1)

    # -- batched maps (numpy in, numpy out; used by eval) ------------------------------------------
    @torch.no_grad()
    def predict(self, codes: np.ndarray, features: np.ndarray, sample: bool = False,
                rng: np.random.Generator | None = None) -> np.ndarray:
        """Codes [N] (+ observation features [N, F]) -> commands [N, A]."""
        codes_t = torch.as_tensor(np.asarray(codes), dtype=torch.long)
        if self.kind == "learned":
            y = self.forward_net(self._forward_inputs(codes_t, torch.as_tensor(features).float()))
            return (self.t["code_means"][codes_t] + y * self.std).numpy()
        if sample:                   # u ~ D[a]: one of the real actions seen with the code
            rng = rng or np.random.default_rng()
            pool, pool_codes = self.t["sample_actions"].numpy(), self.t["sample_codes"].numpy()
            out = self.t["code_means"][codes_t].numpy().copy()
            for i, c in enumerate(codes_t.tolist()):
                seen = np.flatnonzero(pool_codes == c)
                if len(seen):
                    out[i] = pool[rng.choice(seen)]
            return out
        return self.t["code_means"][codes_t].numpy()

    @torch.no_grad()
    def invert(self, actions: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Commands [N, A] (+ observation features) -> LAM codes [N]."""
        a = torch.as_tensor(np.asarray(actions)).float()
        logits = self._lookup_logits(a)
        if self.kind == "learned":
            logits = logits + self.inverse_net(self._inverse_inputs(a, torch.as_tensor(features).float()))
        return logits.argmax(1).numpy()

    def _lookup_logits(self, actions: torch.Tensor) -> torch.Tensor:
        """The lookup's inverse as logits: minus the squared normalised distance to each code's mean
        command (codes never seen on labelled data excluded)."""
        means = (self.t["code_means"] - self.mean) / self.std
        dist = torch.cdist((actions - self.mean) / self.std, means) ** 2
        return (-dist).masked_fill(self.t["code_counts"] == 0, -1e9)

    # -- one observation at a time (the robot-side API) ---------------------------------------------
    def features(self, observation: np.ndarray) -> np.ndarray:
        """Features of one or more uint8 images at the bundle's resolution."""
        if self.world is None:
            raise AdapterError("this adapter has no world model attached: load it with Adapter.load(path)")
        obs = np.asarray(observation)
        return observation_features(self.world.tokenizer, obs[None] if obs.ndim == 3 else obs, self.world.device)

    @property
    def reads_state(self) -> bool:
        """Whether commands depend on the robot's state (a `learned` adapter fitted on shards with states)."""
        return self.kind == "learned" and self.info.get("observation") == "state"

    def _observation_features(self, observation: np.ndarray, state, previous_state) -> np.ndarray:
        """What the forward and inverse networks read: the state and its change since `previous_state`
        (the state one step earlier; none given: the robot was still), or image features (the lookup
        reads neither, so no encoder pass for it)."""
        if self.kind != "learned":
            return np.zeros((1, 0), np.float32)
        if not self.reads_state:
            return self.features(observation)
        n = self.t["feature_mean"].shape[0] // 2
        previous_state = state if previous_state is None else previous_state
        for name, value in (("state", state), ("previous_state", previous_state)):
            if value is None or np.size(value) != n:
                raise AdapterError(f"this adapter was fitted on shards that record the robot's state and reads it: "
                                   f"pass {name}= with its {n} values ({', '.join(self.info.get('state_names', []))}), "
                                   f"got {None if value is None else np.size(value)}")
        return state_observation(np.stack([np.reshape(previous_state, n), np.reshape(state, n)]))[1:]

    def to_robot(self, code: int, observation: np.ndarray, sample: bool = False, state=None,
                 previous_state=None) -> dict:
        features = self._observation_features(observation, state, previous_state)
        return {"action": self.predict(np.array([int(code)]), features, sample)[0], "names": self.names}

    def commands(self, observation: np.ndarray, state=None, previous_state=None) -> np.ndarray:
        """The command of every code from one observation, [|A|, n] (one encoder pass at most). An
        adapter that reads the state, given none (the play page's imagined frames have none), gives
        the lookup's commands."""
        codes = np.arange(len(self.t["code_means"]))
        if self.reads_state and state is None:
            return self.t["code_means"].numpy().copy()
        features = self._observation_features(observation, state, previous_state)
        return self.predict(codes, np.repeat(features, len(codes), 0))

    def to_latent(self, action, observation: np.ndarray, state=None, previous_state=None) -> int:
        features = self._observation_features(observation, state, previous_state)
        return int(self.invert(np.asarray(action, np.float32)[None], features)[0])

    # -- the artifact ----------------------------------------------------------------------------
    def save(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "adapter.safetensors.tmp"
        with writing("adapter", out / "adapter.safetensors", "An earlier adapter there, if any, is unchanged", (tmp,)):
            save_file({k: v.contiguous() for k, v in self.t.items()}, str(tmp))
            os.replace(tmp, out / "adapter.safetensors")
        write_text_atomic(out / "adapter.json", json.dumps(self.info, indent=1), "adapter description")
        return out

    @classmethod
    def load(cls, path: str | Path, world=None, bundle: str | Path | None = None, device: str = "auto") -> Adapter:
        """Load an adapter and the world model it belongs to (`world`, or the bundle at `bundle`, or
        the one recorded at fit time). A bundle other than the one it was fitted on is refused."""
        from robo_genie.play import World

        path = Path(path)
        if not (path / "adapter.json").is_file():
            raise AdapterError(f"{path} is not an adapter (no adapter.json). Fit one with `robo-genie adapter fit "
                               f"bundle=RUN/bundle data.path=SHARDS_WITH_ACTIONS out={path}`.")
        info = json.loads((path / "adapter.json").read_text())
        if info.get("format") != FORMAT:
            raise AdapterError(f"{path / 'adapter.json'}: unknown format {info.get('format')!r} (expected {FORMAT})")
        tensors = load_file(str(path / "adapter.safetensors"))
        if bundle is None:
            bundle = world.bundle_path if world is not None and world.bundle_path else info["bundle"]
        bundle = Path(bundle)
        found = bundle_io.digest(bundle)
        if found != info["bundle_digest"]:
            raise AdapterError(f"adapter {path} was fitted on the bundle {info['bundle']} (digest "
                               f"{info['bundle_digest'][:12]}), but {bundle} is another model (digest {found[:12]}). "
                               f"Refit it: `robo-genie adapter fit bundle={bundle} data.path=... out=...`.")
        if world is None:
            world = World.from_bundle(bundle, device)
        return cls(info["kind"], info, tensors, world)
