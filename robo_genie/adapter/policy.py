"""Goal-reaching with a world model: plan latent-code sequences with the cross-entropy method (CEM),
map the first code of the best plan to a real command, execute, replan (receding horizon, as
V-JEPA 2-AC plans on real arms).

    policy = LatentPolicy(world, adapter, goal_image)
    command = policy.select_action(observation)       # -> torch.Tensor [A], LeRobot-policy style
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from robo_genie.adapter.transitions import cell_means

# The planner and the MuJoCo oracle compare a frame with the goal as the means of 4x4 cells: pixel by
# pixel, a thin arm moved nearer its goal position overlaps it no more than before, so the distance
# does not fall as it nears; cell means fall smoothly (NOTES.md, 2026-12-07).
GOAL_GRID = 4


def cem(score: Callable[[np.ndarray], np.ndarray], n_options: int, horizon: int, population: int = 64,
        elites: int = 8, iterations: int = 3, rng: np.random.Generator | None = None) -> tuple[np.ndarray, float]:
    """Cross-entropy method over sequences of discrete options. `score(seqs [P, horizon]) -> [P]`,
    higher is better. Each step's categorical distribution is refitted to the elite sequences
    (mixed with a little of the uniform, so no option dies out). Returns the best sequence seen."""
    rng = rng or np.random.default_rng()
    probs = np.full((horizon, n_options), 1.0 / n_options)
    best, best_score = None, -np.inf
    for _ in range(iterations):
        seqs = np.stack([rng.choice(n_options, population, p=p) for p in probs], 1)   # [P, H]
        scores = score(seqs)
        order = np.argsort(-scores)
        if scores[order[0]] > best_score:
            best, best_score = seqs[order[0]].copy(), float(scores[order[0]])
        top = seqs[order[:elites]]
        freq = np.stack([np.bincount(top[:, h], minlength=n_options) for h in range(horizon)]) / len(top)
        probs = 0.9 * freq + 0.1 / n_options
    return best, best_score


def frame_similarity(frames: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Negative mean squared error between each uint8 frame [P, H, W, 3] and a uint8 goal, over the
    means of GOAL_GRID x GOAL_GRID cells of pixels (values in [0, 1])."""
    def cells(x: np.ndarray) -> torch.Tensor:
        return F.adaptive_avg_pool2d(torch.from_numpy(x).float().div(255).permute(0, 3, 1, 2), GOAL_GRID)
    return -((cells(frames) - cells(goal[None])) ** 2).mean(dim=(1, 2, 3)).numpy()


class LatentPolicy:
    """Plans in the world model over latent codes; the adapter turns the chosen code into a command."""

    def __init__(self, world, adapter, goal: np.ndarray, horizon: int = 2, population: int = 32, elites: int = 6,
                 iterations: int = 2, seed: int = 0):
        self.world, self.adapter = world, adapter
        self.goal = np.asarray(goal)
        self.horizon, self.population, self.elites, self.iterations = horizon, population, elites, iterations
        self.rng = np.random.default_rng(seed)
        self._goal_codes: torch.Tensor | None = None
        self.plan: np.ndarray | None = None          # the latest best code sequence
        self.predicted: np.ndarray | None = None     # the model's frame at the end of that plan (uint8)
        self.previous_state = None                   # the robot's state at the last call (a state adapter reads its change)

    def reset(self) -> None:
        self.plan = self.predicted = self.previous_state = None

    def _image(self, image: np.ndarray) -> torch.Tensor:
        """An image as the world model reads it: [H, W, 3] float in [0, 1] at its resolution."""
        from robo_genie.datasets.transforms import center_crop_resize

        return torch.from_numpy(center_crop_resize(np.asarray(image), self.world.image_size)).float().div(255)

    @torch.no_grad()
    def _score(self, image: torch.Tensor, seqs: np.ndarray) -> np.ndarray:
        """How close the world model's last frame after each code sequence comes to the goal: the
        tokenizer's code vectors, averaged over GOAL_GRID x GOAL_GRID cells (no decoding: planning
        costs only dynamics steps)."""
        self.world.reset_batch(image[None].expand(len(seqs), -1, -1, -1))
        for h in range(seqs.shape[1]):
            self.world.step_batch(torch.from_numpy(seqs[:, h]).long(), decode=False)
        pred = cell_means(self.world.latest_codes(), GOAL_GRID)
        return -((pred - self._goal_codes) ** 2).mean(dim=(1, 2, 3)).cpu().numpy()

    @torch.no_grad()
    def select_code(self, observation: np.ndarray) -> int:
        if self._goal_codes is None:
            self.world.reset_batch(self._image(self.goal)[None])
            self._goal_codes = cell_means(self.world.latest_codes(), GOAL_GRID)
        image = self._image(observation)
        plan, _ = cem(lambda s: self._score(image, s), self.world.num_actions, self.horizon, self.population,
                      self.elites, self.iterations, self.rng)
        self.plan = plan
        self.world.reset_batch(image[None])
        for code in plan:
            frame = self.world.step_batch(torch.tensor([int(code)]))
        self.predicted = (frame[0].cpu().numpy() * 255).round().astype(np.uint8)
        return int(plan[0])

    def select_action(self, observation, state=None) -> torch.Tensor:
        """The next real command for an observation: a uint8 image [H, W, 3] (and the robot's state,
        for an adapter that reads it), or a LeRobot-style batch {"observation.image": float tensor
        [1, 3, H, W] in [0, 1], "observation.state": [1, S]}."""
        if isinstance(observation, dict):
            img = observation["observation.image"]
            img = img[0] if img.ndim == 4 else img
            if "observation.state" in observation:
                state = torch.as_tensor(observation["observation.state"]).reshape(-1).cpu().numpy()
            observation = (img.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        code = self.select_code(observation)
        command = self.adapter.to_robot(code, observation, state=state, previous_state=self.previous_state)["action"]
        self.previous_state = state
        return torch.as_tensor(command, dtype=torch.float32)
