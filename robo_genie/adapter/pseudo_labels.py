"""Commands for the unlabelled episodes, read from the robot's state (VPT-style pseudo-labels).

Where the shards record the robot's state in every episode, the state and how it changed over a
transition say almost exactly what was commanded: a linear inverse-dynamics map fitted on the
labelled episodes alone (ten of the arm scenes' 200) gives a held-out direction cosine of 0.99. The
`learned` adapter then trains on every episode, labelled and pseudo-labelled, rather than on the
labelled few (NOTES.md, twenty-first round).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from robo_genie.adapter.transitions import Transitions

RIDGE = 10.0    # on standardised inputs; 2 labelled episodes (1 %) need it, 10 or more barely notice it


def _inputs(data: Transitions) -> np.ndarray:
    return np.concatenate([data.features, data.next_features - data.features], 1).astype(np.float64)


def fit_inverse_dynamics(labelled: Transitions, unlabelled: Transitions):
    """A ridge regression from (state, state change) to the recorded command, fitted on the labelled
    transitions; returns predict(transitions). Its inputs are standardised over all transitions: a
    value that barely varies over two labelled episodes (the tabletop gripper's depth, fixed within
    each) would, scaled by its spread there alone, swing the guesses on every other episode."""
    x = _inputs(labelled)
    everything = np.concatenate([x, _inputs(unlabelled)])
    mean, std = everything.mean(0), everything.std(0) + 1e-6

    def design(x: np.ndarray) -> np.ndarray:
        return np.concatenate([(x - mean) / std, np.ones((len(x), 1))], 1)

    a = design(x)
    penalty = RIDGE * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0       # not the intercept: a constant command (a gripper always closed) stays itself
    w = np.linalg.solve(a.T @ a + penalty, a.T @ labelled.actions.astype(np.float64))
    return lambda data: (design(_inputs(data)) @ w).astype(np.float32)


def with_pseudo_labels(labelled: Transitions, unlabelled: Transitions) -> Transitions:
    """The labelled transitions, then the unlabelled ones carrying the inverse-dynamics map's commands."""
    if labelled.next_features is None or unlabelled.next_features is None:
        raise ValueError("pseudo-labels need the robot's state at both ends of each transition")
    guessed = dataclasses.replace(unlabelled, actions=fit_inverse_dynamics(labelled, unlabelled)(unlabelled))
    return Transitions.concatenate([labelled, guessed])
