"""Compiled training steps: the same numbers as eager steps, the same random stream, a fallback that works."""

import math

import pytest
import torch

from test_train import interrupted_and_reloaded, make_trainer
from vaelab.training.compiled import adam_supported, adam_update
from vaelab.distributions import NoisePlayback, NoiseRecorder, diagonal_normal, draw_ahead, rsample
from vaelab.storage import read_jsonl
from vaelab.training import AUTO_COMPILE_STEPS, compiles


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_update_is_torch_adam(weight_decay):
    torch.manual_seed(0)
    params = [torch.randn(7, 5), torch.randn(5)]
    reference = [p.clone().requires_grad_() for p in params]
    optimizer = torch.optim.Adam(reference, lr=3e-3, betas=(0.8, 0.99), eps=1e-4, weight_decay=weight_decay)
    exp_avgs, exp_avg_sqs = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    step = torch.zeros(())
    for _ in range(25):
        grads = [torch.randn_like(p) for p in params]
        for p, g in zip(reference, grads):
            p.grad = g.clone()
        optimizer.step()
        adam_update(params, grads, exp_avgs, exp_avg_sqs, step, torch.tensor(3e-3), 0.8, 0.99, 1e-4, weight_decay)
        step += 1
    for mine, torch_s in zip(params, reference):
        torch.testing.assert_close(mine, torch_s.detach(), rtol=1e-5, atol=1e-6)
    state = optimizer.state[reference[0]]
    torch.testing.assert_close(exp_avg_sqs[0], state["exp_avg_sq"])


def test_adam_supported_only_where_the_update_is_the_same():
    params = [torch.zeros(3, requires_grad=True)]
    assert adam_supported(torch.optim.Adam(params))
    assert not adam_supported(torch.optim.Adam(params, amsgrad=True))
    assert not adam_supported(torch.optim.AdamW(params))
    assert not adam_supported(torch.optim.SGD(params, lr=0.1))


def test_noise_drawn_ahead_is_the_noise_drawn_in_place():
    posterior = diagonal_normal(torch.zeros(4, 3), torch.ones(4, 3))
    in_place = torch.Generator().manual_seed(5)
    expected = [rsample(posterior, (2,), in_place), rsample(posterior, (), in_place)]
    recorder = NoiseRecorder(torch.Generator().manual_seed(5))
    recorded = [rsample(posterior, (2,), recorder), rsample(posterior, (), recorder)]
    assert [d[:2] for d in recorder.draws] == [("normal", torch.Size([2, 4, 3])), ("normal", torch.Size([4, 3]))]
    ahead = torch.Generator().manual_seed(5)
    playback = NoisePlayback(draw_ahead(recorder.draws, ahead))
    played = [rsample(posterior, (2,), playback), rsample(posterior, (), playback)]
    for a, b, c in zip(expected, recorded, played):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(ahead.get_state(), in_place.get_state())
    with pytest.raises(RuntimeError, match=r"noise draw 0 asks for normal noise of shape \(3, 4, 3\)"):
        rsample(posterior, (3,), NoisePlayback(draw_ahead(recorder.draws, ahead)))


def test_auto_compiles_long_runs_of_a_whole_step_on_a_cpu_only():
    cpu = torch.device("cpu")
    assert compiles("auto", cpu, AUTO_COMPILE_STEPS, whole=True)
    assert not compiles("auto", cpu, AUTO_COMPILE_STEPS - 1, whole=True)
    assert not compiles("auto", cpu, 10**9, whole=False)  # another optimizer, torchrun: only on request
    assert not compiles("auto", torch.device("cuda"), 10**9, whole=True)  # a choice there: train.compile = true
    assert compiles(True, cpu, 1, whole=False) and not compiles(False, cpu, 10**9, whole=True)


def test_long_runs_compile_their_step_by_default(tmp_path, tiny_raw):
    from vaelab.config import resolve_config
    config = resolve_config()  # the preset `vaelab train` runs: mnist-lab
    steps = config.train.epochs * math.ceil((60_000 - config.data.val_size) / config.train.batch_size)
    assert config.train.compile == "auto" and steps >= AUTO_COMPILE_STEPS
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=400", "train.device=cpu")  # 16 steps an epoch
    assert trainer.planned_steps() == 400 * 16 >= AUTO_COMPILE_STEPS
    assert trainer.step.compiled is not None and trainer.step.whole
    short = make_trainer(tmp_path, tiny_raw, "train.epochs=3", "train.device=cpu", name="short")
    assert short.step.compiled is None


def _weights(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


@pytest.mark.parametrize("extra, whole", [
    ((), True),  # Adam: the whole step in one graph
    (("optim.name=rmsprop",), False),  # another optimizer: the objective compiled, autograd and the optimizer as usual
    (("model.latent_dim2=3", "model.encoder_hidden2=[16]", "model.decoder_hidden2=[16]"), True),  # Monte-Carlo KL
    (("objective.name=iwae", "objective.samples=4"), True),  # the IWAE bound, four z's an image
    (("objective.name=iwae", "objective.samples=4", "objective.iwae.gradient=dreg"), True),  # its DReG gradient
    (("model.pseudo_inputs=6",), True),  # a VampPrior: a mixture prior, pseudo-inputs among the weights
    (("model.latent_dim2=3", "model.inference=top-down", "model.encoder_hidden2=[16]", "model.decoder_hidden2=[16]",
      "model.pseudo_inputs=6"), True),  # Tomczak & Welling's two-level VampPrior model
    (("objective.name=btcvae", "objective.beta=4", "objective.btcvae.sampling=mss"), True),  # dataset_size given
    # the step count an input of the graph: C moves every step without recompiling
    (("objective.name=capacity", "objective.capacity.steps=20", "objective.capacity.gamma=10",
      "objective.capacity.max_nats=5"), True),
    (("objective.name=dipvae", "objective.dipvae.type=ii"), True),
])
def test_compiled_step_trains_like_the_eager_step(tmp_path, tiny_raw, extra, whole):
    fixed_weight = ("objective.name=iwae", "objective.name=capacity")  # no KL weight to warm up
    warmup = () if set(fixed_weight) & set(extra) else ("objective.warmup_epochs=1",)  # a changing KL weight
    settings = ("train.epochs=2", "train.precision=float32", *warmup, *extra)
    eager = make_trainer(tmp_path, tiny_raw, *settings, "train.compile=false", name="eager")
    compiled = make_trainer(tmp_path, tiny_raw, *settings, "train.compile=true", name="compiled")
    assert compiled.step.whole is whole and eager.step.compiled is None
    start = _weights(eager)
    assert torch.equal(start, _weights(compiled))
    losses = {}  # per optimizer step
    for name, trainer in (("eager", eager), ("compiled", compiled)):
        check, losses[name] = trainer.guard.check_loss, {}
        trainer.guard.check_loss = lambda loss, check=check, out=losses[name], t=trainer: (
            out.__setitem__(t.state.global_step, loss.item()), check(loss))
    eager_summary, compiled_summary = eager.fit(), compiled.fit()
    losses = {name: [by_step[s] for s in sorted(by_step)] for name, by_step in losses.items()}
    assert compiled_summary["compiled_step"] is True, compiled_summary.get("compile_error")
    assert compiled_summary["compile_seconds"] > 0
    # the same noise in the same order: the generators end in the same state
    assert torch.equal(eager.generator.get_state(), compiled.generator.get_state())
    # the first step runs compiled from the same weights: the same loss but for rounding
    assert compiled.step.compiled.settled and len(losses["compiled"]) == len(losses["eager"]) > 10
    assert losses["compiled"][0] == pytest.approx(losses["eager"][0], rel=1e-5)
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-3)
    # Adam turns gradients that nearly cancel into steps of either sign, so a few weights part by
    # about lr a step; on the whole the two runs are far closer to each other than to the start
    moved = (_weights(eager) - start).abs().mean()
    assert (_weights(compiled) - _weights(eager)).abs().mean() < 0.02 * moved
    assert compiled_summary["test_elbo"] == pytest.approx(eager_summary["test_elbo"], abs=0.05)


def test_a_step_that_cannot_compile_runs_eagerly_from_the_same_noise(tmp_path, tiny_raw, monkeypatch):
    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return call

    monkeypatch.setattr("vaelab.training.compiled.torch.compile", broken)
    logged = []
    eager = make_trainer(tmp_path, tiny_raw, "train.epochs=2", "train.compile=false", name="eager")
    failing = make_trainer(tmp_path, tiny_raw, "train.epochs=2", "train.compile=true", name="failing")
    failing.log = logged.append
    eager_summary, failing_summary = eager.fit(), failing.fit()
    assert failing_summary["compiled_step"] is False
    assert failing_summary["compile_error"] == "RuntimeError: no C++ compiler found"
    assert any("could not compile the training step (RuntimeError: no C++ compiler found)" in m for m in logged)
    assert torch.equal(_weights(failing), _weights(eager))  # bit for bit: the fallback redid the step eagerly
    assert failing_summary["test_elbo"] == eager_summary["test_elbo"]


@pytest.mark.parametrize("interrupt_at", [7, 16, 20])  # mid-epoch, the end of the first epoch (16 steps), later
def test_a_compiled_run_resumed_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path, tiny_raw, interrupt_at):
    settings = ("train.epochs=2", "train.compile=true")
    reference = make_trainer(tmp_path, tiny_raw, *settings, name="reference")
    reference.fit()
    second = interrupted_and_reloaded(make_trainer(tmp_path, tiny_raw, *settings, name="resumed"), interrupt_at)
    assert second.state.global_step == interrupt_at
    summary = second.fit()
    assert summary["compiled_step"] is True and second.step.whole
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key


def test_a_compiled_run_follows_the_schedule_and_averages_its_weights(tmp_path, tiny_raw):
    settings = ("train.epochs=3", "train.precision=float32", "optim.schedule=warmup_cosine", "optim.warmup_epochs=1",
                "optim.lr=0.003", "train.ema_decay=0.9")
    eager = make_trainer(tmp_path, tiny_raw, *settings, "train.compile=false", name="eager")
    compiled = make_trainer(tmp_path, tiny_raw, *settings, "train.compile=true", name="compiled")
    start = _weights(eager)
    eager.fit()
    summary = compiled.fit()
    assert summary["compiled_step"] is True and compiled.step.whole and summary["weights"] == "ema"
    lrs = {name: [r["lr"] for r in read_jsonl(t.run_dir / "metrics.jsonl")] for name, t in
           (("eager", eager), ("compiled", compiled))}
    assert lrs["compiled"] == lrs["eager"] and len(set(lrs["eager"])) == 3
    # a graph that kept the first lr would part from the eager run by far more than rounding
    moved = (_weights(eager) - start).abs().mean()
    assert (_weights(compiled) - _weights(eager)).abs().mean() < 0.02 * moved
    assert int(compiled.ema.n_averaged) == int(eager.ema.n_averaged) == eager.state.global_step


def test_a_compiled_run_with_a_schedule_and_averaged_weights_resumes_bit_for_bit(tmp_path, tiny_raw):
    settings = ("train.epochs=3", "train.compile=true", "optim.schedule=warmup_cosine", "optim.warmup_epochs=1",
                "train.ema_decay=0.9")
    reference = make_trainer(tmp_path, tiny_raw, *settings, name="reference")
    reference.fit()
    second = interrupted_and_reloaded(make_trainer(tmp_path, tiny_raw, *settings, name="resumed"), 20)
    assert second.fit()["compiled_step"] is True
    for key, value in reference.ema.state_dict().items():
        assert torch.equal(value, second.ema.state_dict()[key]), key
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
