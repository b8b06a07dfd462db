"""``trainer.accumulate_steps``: one update per k batches with their mean gradient, and a run stopped or
killed in the middle of an update resumes exactly (checkpoints fall only between whole updates)."""
from __future__ import annotations

import copy
import json
import signal

import pytest
import torch

from attn_bench.commands.train import run_training
from conftest import _compose_train

# 10 batches an epoch in updates of 3, 3, 3 and the remainder 1; a checkpoint after every update
ACCUMULATED = ["data.train_size=200", "data.test_size=60", "trainer.batch_size=20", "trainer.epochs=2",
               "trainer.accumulate_steps=3", "trainer.checkpoint_every_steps=1", "trainer.deterministic=true",
               "trainer.progress=false", "measure_cost=false", "device=cpu"]


def _history(metrics):
    keys = ("epoch", "step", "lr", "train_loss", "train_top1", "eval_loss", "eval_top1", "eval_top5")
    return [{k: h[k] for k in keys} for h in metrics["history"]]


def _same_weights(a, b) -> bool:
    wa, wb = (torch.load(d / "last.pt", weights_only=True)["model"] for d in (a, b))
    return all(torch.equal(t, wb[name]) for name, t in wa.items())


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("accumulated")
    return run_dir, run_training(_compose_train(ACCUMULATED), run_dir)


def test_an_update_uses_the_mean_gradient_of_its_batches_and_the_epoch_ends_with_the_remainder(
        tmp_path, monkeypatch):
    """At every optimizer step the gradients equal those of the model as it stood before the update's first
    batch, backpropagated through each of its batches in turn with the loss divided by their number
    (3, and 1 for the epoch's last batch): 4 updates an epoch for 10 batches, and the schedule counts updates."""
    from attn_bench.training.trainer import Trainer

    groups, grads, names = [], [], {}  # (the model before the update, its batches); the gradients each update used
    original_step, original_update = Trainer._train_step, torch.amp.GradScaler.step

    def recording_step(self, x, y, state):
        names.update({id(p): name for name, p in self.model.named_parameters()})
        if state.batch % 3 == 0:
            groups.append((copy.deepcopy(self.model), []))
        groups[-1][1].append((x.clone(), y.clone()))
        return original_step(self, x, y, state)

    def recording_update(self, optimizer, *args, **kwargs):
        grads.append({names[id(p)]: p.grad.clone() for group in optimizer.param_groups for p in group["params"]})
        return original_update(self, optimizer, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_step", recording_step)
    monkeypatch.setattr(torch.amp.GradScaler, "step", recording_update)
    overrides = [o for o in ACCUMULATED if not o.startswith("trainer.epochs")] + ["trainer.epochs=1"]
    metrics = run_training(_compose_train(overrides), tmp_path)
    monkeypatch.undo()

    assert metrics["steps"] == len(grads) == len(groups) == 4
    assert [len(batches) for _, batches in groups] == [3, 3, 3, 1]
    for (model, batches), used in zip(groups, grads):
        model.train()
        model.zero_grad(set_to_none=True)
        for x, y in batches:
            (torch.nn.functional.cross_entropy(model(x), y) / len(batches)).backward()
        expected = {name: p.grad for name, p in model.named_parameters()}
        assert used.keys() == expected.keys()
        for name, grad in used.items():  # summed in the same order; another thread split may round apart
            torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
    assert metrics["history"][-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine ran out at update 4


def test_unaccumulated_runs_are_the_runs_of_before(compose_train, tmp_path):
    """accumulate_steps=1 (the default) is the old loop: one update per batch."""
    metrics = run_training(compose_train(ACCUMULATED + ["trainer.accumulate_steps=1", "trainer.epochs=1"]), tmp_path)
    assert metrics["steps"] == 10


def test_a_stop_in_the_middle_of_an_update_checkpoints_after_it_and_the_requeued_run_ends_identically(
        straight, tmp_path, monkeypatch):
    """The cluster's stop signal arrives after batch 5, inside the update of batches 4-6: the run saves at
    the end of that update (batch 6, step 2), not halfway through it, and the requeued run ends exactly as
    the uninterrupted one."""
    from attn_bench.training.trainer import Trainer

    handed_over, calls = [], []

    def submitit_handler(signum, frame):
        handed_over.append(signum)
        raise SystemExit(144)

    original_step = Trainer._train_step

    def step_then_signal(self, x, y, state):
        out = original_step(self, x, y, state)
        calls.append(1)
        if len(calls) == 5:
            signal.raise_signal(signal.SIGUSR2)
        return out

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        monkeypatch.setattr(Trainer, "_train_step", step_then_signal)
        with pytest.raises(SystemExit):
            run_training(_compose_train(ACCUMULATED), tmp_path)
        monkeypatch.undo()
        saved = torch.load(tmp_path / "last.pt", weights_only=True)
        assert (saved["epoch"], saved["batch"], saved["step"]) == (0, 6, 2)
        assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"
        resumed = run_training(_compose_train(ACCUMULATED), tmp_path)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert resumed["status"] == "completed" and _history(resumed) == _history(straight[1])
    assert _same_weights(straight[0], tmp_path)


def test_a_run_killed_in_the_middle_of_an_update_redoes_that_update_and_ends_identically(
        straight, tmp_path, monkeypatch):
    """Killed inside the second update (after batch 5, its gradients half summed and never saved): last.pt is
    the end of update 1, and the resumed run redoes batches 4-6 whole, ending bit-identical."""
    from attn_bench.training.trainer import Trainer

    original_step, calls = Trainer._train_step, []

    def step_then_die(self, x, y, state):
        out = original_step(self, x, y, state)
        calls.append(1)
        if len(calls) == 5:
            raise MemoryError("killed")  # nothing after this point runs: like a SIGKILL, but in-process
        return out

    monkeypatch.setattr(Trainer, "_train_step", step_then_die)
    with pytest.raises(MemoryError):
        run_training(_compose_train(ACCUMULATED), tmp_path)
    monkeypatch.undo()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["batch"], saved["step"]) == (0, 3, 1)
    steps = []
    monkeypatch.setattr(Trainer, "_train_step", lambda self, *a: steps.append(1) or original_step(self, *a))
    resumed = run_training(_compose_train(ACCUMULATED), tmp_path)
    assert len(steps) == 20 - 3  # from batch 4 of epoch 1: the half-done update again, whole
    assert resumed["status"] == "completed" and _history(resumed) == _history(straight[1])
    assert _same_weights(straight[0], tmp_path)
