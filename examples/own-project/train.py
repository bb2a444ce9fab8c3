"""A small project of your own, run by autoresearch: a two-layer network learns two interleaved spirals.

Nothing here comes from autoresearch: the file reads its training budget from the environment
variable the harness sets (AUTORESEARCH_TIME_BUDGET, seconds), trains until it is spent, and
prints the summary block the harness reads (a `---` line, then `key: value` lines). The agent
edits the UPPERCASE constants below; the data and the evaluation stay as they are.
"""

import os
import time

import numpy as np

# --- hyperparameters: edit these ---------------------------------------------------------------
LEARNING_RATE = 0.05
HIDDEN = 16
BATCH_SIZE = 32
WEIGHT_DECAY = 0.0001
INIT_SCALE = 1.0
SEED = 0

# --- fixed: the budget, the data, the evaluation ------------------------------------------------
BUDGET = float(os.environ.get("AUTORESEARCH_TIME_BUDGET", "5"))


def spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t = np.sqrt(rng.uniform(0.05, 1.0, n)) * 3 * np.pi
    label = rng.integers(0, 2, n)
    angle = t + label * np.pi
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) / (3 * np.pi)
    return x + rng.normal(0, 0.02, x.shape), label


data = np.random.default_rng(1234)  # the same data for every run
x_train, y_train = spirals(4000, data)
x_val, y_val = spirals(2000, data)

rng = np.random.default_rng(SEED)
w1 = rng.normal(0, INIT_SCALE / np.sqrt(2), (2, HIDDEN))
b1 = np.zeros(HIDDEN)
w2 = rng.normal(0, INIT_SCALE / np.sqrt(HIDDEN), (HIDDEN, 2))
b2 = np.zeros(2)


def forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.tanh(x @ w1 + b1)
    return h, h @ w2 + b2


start = time.time()
step = 0
next_report = 0.0
while time.time() - start < BUDGET:
    idx = rng.integers(0, len(x_train), BATCH_SIZE)
    x, y = x_train[idx], y_train[idx]
    h, logits = forward(x)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
    grad = p
    grad[np.arange(len(y)), y] -= 1
    grad /= len(y)
    dh = (grad @ w2.T) * (1 - h**2)
    w2 -= LEARNING_RATE * (h.T @ grad + WEIGHT_DECAY * w2)
    b2 -= LEARNING_RATE * grad.sum(axis=0)
    w1 -= LEARNING_RATE * (x.T @ dh + WEIGHT_DECAY * w1)
    b1 -= LEARNING_RATE * dh.sum(axis=0)
    step += 1
    elapsed = time.time() - start
    if elapsed >= next_report:
        print(f"step {step:06d} ({100 * min(elapsed / BUDGET, 1):.1f}%) | loss: {loss:.6f}", flush=True)
        next_report += BUDGET / 10
    if not np.isfinite(loss) or loss > 100:
        print("FAIL")
        raise SystemExit(1)

training_seconds = time.time() - start
accuracy = float((forward(x_val)[1].argmax(axis=1) == y_val).mean())
print("---")
print(f"accuracy:         {accuracy:.6f}")
print(f"training_seconds: {training_seconds:.1f}")
print(f"num_steps:        {step}")
