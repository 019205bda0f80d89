"""Training: determinism, exact resume, early stopping, the run folder."""

import json
import math

import pytest
import torch

from vaelab.config import resolve_config
from vaelab.data.views import make_views
from vaelab.device import native_bfloat16, network_dtype
from vaelab.storage import load_tensors, read_jsonl
from vaelab.pipeline import extended_config, finished_message
from vaelab.runs import CHECKPOINT, WEIGHTS, RunFolder, RunFolderError
from vaelab.training import Trainer, dataset_elbo, learning_rate
from vaelab.training.checkpoint import TrainState


def tiny_config(*overrides):
    # One thread, pinned: under the default "start" the count follows the machine's load when each
    # run starts, and runs compared bit for bit must reduce their sums over the same thread count
    # (test_threads covers the decision and its record on resume).
    return resolve_config(overrides=["data.val_size=100", "train.batch_size=32", "train.epochs=3",
                                     "model.encoder_hidden=[32]", "model.decoder_hidden=[32]",
                                     "train.eval_batch_size=50", "train.threads=1", *overrides])


def make_trainer(tmp_path, raw, *overrides, name="run"):
    config = tiny_config(*overrides)
    run_dir = tmp_path / name
    RunFolder(run_dir).create(config)
    data = make_views(raw, config.data)
    return Trainer(config, run_dir, data, progress=False, log=lambda *a: None)


def interrupted_and_reloaded(first, interrupt_at):
    """Ctrl-C `first` after step `interrupt_at`; a new trainer on its run folder, checkpoint loaded."""
    step = first.step

    def step_then_ctrl_c(x, y, batch_total):
        step(x, y, batch_total)
        if first.state.global_step + 1 == interrupt_at:
            first.stop_requested = True  # what the SIGINT handler does

    first.step = step_then_ctrl_c
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    second = Trainer(first.config, first.run_dir, first.data, progress=False, log=lambda *a: None)
    second.load_checkpoint()
    return second


def resumed_like_reference(make, interrupt_at):
    """(reference, resumed): `make(name)`'s trainer run through, and another interrupted after step
    `interrupt_at`, reloaded and run to the end; asserts the two end with the same test ELBO, the same
    weights and the same metrics.jsonl (but its seconds), and returns both for the caller's own checks."""
    reference = make("reference")
    summary = reference.fit()
    second = interrupted_and_reloaded(make("resumed"), interrupt_at)
    assert second.state.global_step == interrupt_at
    assert second.fit()["test_elbo"] == summary["test_elbo"]
    assert_same_tensors(reference.model.state_dict(), second.model.state_dict())
    records = read_jsonl(reference.run_dir / "metrics.jsonl")
    assert _strip_seconds(read_jsonl(second.run_dir / "metrics.jsonl")) == _strip_seconds(records)
    return reference, second


def assert_same_tensors(expected, got):
    """Two state dicts hold the same tensors, bit for bit."""
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key


def _strip_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_training_improves_the_elbo_and_writes_the_run_folder(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=6")
    before = dataset_elbo(trainer.model, trainer.data.val, 50)
    summary = trainer.fit()
    after = dataset_elbo(trainer.model, trainer.data.val, 50)
    assert after["elbo"] > before["elbo"] + 20
    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == list(range(1, 7))
    for key in ("train_elbo", "train_reconstruction", "train_kl", "val_elbo", "val_reconstruction",
                "val_kl", "seconds"):
        assert all(math.isfinite(r[key]) for r in records), key
    assert all(abs(r["val_elbo"] - (r["val_reconstruction"] - r["val_kl"])) < 1e-3 for r in records)
    assert summary["best_epoch"] == max(records, key=lambda r: r["val_elbo"])["epoch"]
    assert summary["units"].startswith("nats per image")
    for name in ("config.json", "metrics.jsonl", CHECKPOINT, WEIGHTS, "summary.json"):
        assert (trainer.run_dir / name).is_file(), name


def test_same_seed_same_metrics(tmp_path, tiny_raw):
    a = make_trainer(tmp_path, tiny_raw, name="a")
    b = make_trainer(tmp_path, tiny_raw, name="b")
    a.fit(), b.fit()
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(read_jsonl(a.run_dir / "metrics.jsonl")) == strip(read_jsonl(b.run_dir / "metrics.jsonl"))
    c = make_trainer(tmp_path, tiny_raw, "train.seed=1", name="c")
    c.fit()
    assert strip(read_jsonl(c.run_dir / "metrics.jsonl")) != strip(read_jsonl(a.run_dir / "metrics.jsonl"))


@pytest.mark.parametrize("interrupt_at", [7, 19, 38])  # mid-epoch, end of an epoch (19 steps each), later
def test_interrupted_and_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path, tiny_raw, interrupt_at):
    reference = make_trainer(tmp_path, tiny_raw, name="reference")
    reference.fit()

    second = interrupted_and_reloaded(make_trainer(tmp_path, tiny_raw, name="resumed"), interrupt_at)
    assert second.state.global_step == interrupt_at
    second.fit()
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(read_jsonl(second.run_dir / "metrics.jsonl")) == strip(read_jsonl(reference.run_dir / "metrics.jsonl"))


def test_early_stopping_keeps_the_best_weights(tmp_path, tiny_raw):
    # A learning rate this large makes the validation ELBO worse after the first epochs.
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=30", "train.patience=2", "optim.lr=0.05")
    summary = trainer.fit()
    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    assert summary["stop_reason"].startswith("early stop")
    assert len(records) == summary["best_epoch"] + 2
    weights, _ = load_tensors(trainer.run_dir / WEIGHTS)
    trainer.model.load_state_dict(weights)
    best = dataset_elbo(trainer.model, trainer.data.val, 50, seed=trainer.config.data.eval_seed)
    assert best["elbo"] == pytest.approx(summary["best_val_elbo"], abs=1e-4)


def test_max_steps_stops_mid_epoch(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw, "train.max_steps=5")
    summary = trainer.fit()
    assert summary["steps"] == 5 and "max_steps" in summary["stop_reason"]


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "adagrad", "sgd"])
def test_every_optimizer_trains_and_resumes(tmp_path, tiny_raw, optimizer):
    trainer = make_trainer(tmp_path, tiny_raw, f"optim.name={optimizer}", "train.epochs=1")
    trainer.fit()
    again = Trainer(trainer.config, trainer.run_dir, trainer.data, progress=False, log=lambda *a: None)
    again.load_checkpoint()
    assert again.optimizer.state_dict()["param_groups"] == trainer.optimizer.state_dict()["param_groups"]


def test_gaussian_grey_model_trains(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw, "model.likelihood=gaussian", "data.binarization=grey",
                           "model.init=normal", "train.epochs=2")
    summary = trainer.fit()
    assert math.isfinite(summary["test_elbo"])


def test_prepare_refuses_an_existing_run(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw)
    with pytest.raises(FileExistsError, match="--resume"):
        RunFolder(trainer.run_dir).create(trainer.config)
    assert json.loads((trainer.run_dir / "config.json").read_text())["name"] == "mnist-lab"


@pytest.mark.slow
def test_a_few_hundred_steps_on_real_mnist_lower_the_validation_loss(tmp_path, mnist_raw):
    config = resolve_config(overrides=["train.max_steps=300", "train.epochs=1"])
    run_dir = tmp_path / "mnist"
    RunFolder(run_dir).create(config)
    trainer = Trainer(config, run_dir, make_views(mnist_raw, config.data), progress=False, log=lambda *a: None)
    before = dataset_elbo(trainer.model, trainer.data.val, 1000, seed=1)
    trainer.fit()
    after = dataset_elbo(trainer.model, trainer.data.val, 1000, seed=1)
    assert before["elbo"] < -500  # an untrained decoder: about 784 log 2
    assert after["elbo"] > -200, after  # 300 steps reach about -175 nats


@pytest.mark.parametrize("read_every", [1, 50], ids=["cpu-reads-every-loss", "gpu-notes-on-device"])
def test_a_nan_stops_training_naming_epoch_step_and_causes_and_keeps_the_last_checkpoint(tmp_path, tiny_raw,
                                                                                        read_every):
    from vaelab.training import NonFiniteError

    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=3")
    trainer.guard.read_every = read_every  # 50: the GPU's way, the step noted on the device, read at epoch end
    step = trainer.step
    poisoned = {"done": False}

    def step_with_nan_at_25(x, y, batch_total):
        if trainer.state.global_step == 24 and not poisoned["done"]:  # step 9 of epoch 2 (16 an epoch)
            poisoned["done"] = True
            with torch.no_grad():
                trainer.model.decoder.last.weight[0, 0] = float("nan")
        step(x, y, batch_total)

    trainer.step = step_with_nan_at_25
    before = load_tensors(trainer.run_dir / CHECKPOINT)[0] if (trainer.run_dir / CHECKPOINT).exists() else None
    with pytest.raises(NonFiniteError) as err:
        trainer.fit()
    message = str(err.value)
    assert "epoch 2, step 9" in message and "optim.lr" in message and "loss" in message
    kept, meta = load_tensors(trainer.run_dir / CHECKPOINT)
    assert json.loads(meta["state"])["epoch"] == 1  # the end-of-epoch-1 checkpoint, not a poisoned one
    assert all(torch.isfinite(v).all() for k, v in kept.items() if v.is_floating_point())
    assert before is None
    assert not (trainer.run_dir / ".lock").exists()


@pytest.mark.parametrize("at_step, expect", [
    (20, "the loss became NaN or infinite at epoch 2, step 6 (optimizer step 22 in all) (the weights it was "
         "computed with were already not finite: most likely the gradient of the step before)"),
    (15, "the gradient became NaN or infinite at epoch 1, step 16 (optimizer step 16 in all)"),
])
def test_a_nan_gradient_with_a_finite_loss_is_caught_by_the_next_loss_or_the_checkpoint(tmp_path, tiny_raw,
                                                                                        at_step, expect):
    """Only the loss is checked every step; a NaN gradient shows in the next loss, or in the weights saved."""
    from vaelab.training import NonFiniteError

    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=3")
    weight = trainer.model.decoder.last.weight
    weight.register_hook(lambda g: g * float("nan") if trainer.state.global_step == at_step else g)
    with pytest.raises(NonFiniteError) as err:
        trainer.fit()
    assert expect in str(err.value)
    kept, meta = load_tensors(trainer.run_dir / CHECKPOINT) if (trainer.run_dir / CHECKPOINT).exists() else ({}, {})
    assert all(torch.isfinite(v).all() for v in kept.values() if v.is_floating_point())
    assert (json.loads(meta["state"])["epoch"] == 1) if at_step == 20 else not kept


def test_skip_mode_skips_and_counts_nonfinite_steps(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=1", "train.nonfinite=skip")
    terms = trainer.step.terms

    def terms_with_nan_loss(x, y, noise, kl_weight):
        if trainer.state.global_step in (3, 7):
            x = x.clone()
            x[0, 0] = float("nan")
        return terms(x, y, noise, kl_weight)

    trainer.step.terms = terms_with_nan_loss
    trainer.fit()
    record = read_jsonl(trainer.run_dir / "metrics.jsonl")[0]
    assert record["skipped_steps"] == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_a_second_training_of_the_same_folder_refuses_and_a_stale_lock_is_taken_over(tmp_path, tiny_raw):
    import os
    import socket

    from vaelab.training import RunLockedError

    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=1")
    with RunFolder(trainer.run_dir).lock():
        other = Trainer(trainer.config, trainer.run_dir, trainer.data, progress=False, log=lambda *a: None)
        other.parallel = trainer.parallel
        (trainer.run_dir / ".lock").write_text(f"{os.getppid()} {socket.gethostname()}")  # a live process
        with pytest.raises(RunLockedError, match="being trained by process"):
            other.fit()
    (trainer.run_dir / ".lock").write_text(f"999999999 {socket.gethostname()}")  # a process that is gone
    with pytest.warns(UserWarning, match="stale lock"):
        trainer.fit()
    assert not (trainer.run_dir / ".lock").exists()


def test_an_unwritable_run_folder_fails_before_training(tmp_path, tiny_raw):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # even root cannot make a folder below a file
    config = tiny_config()
    with pytest.raises(OSError, match="cannot write the run folder"):
        RunFolder(blocker / "run").create(config)
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=1")
    trainer.run_dir = blocker  # a run folder that is not a writable folder
    with pytest.raises(OSError, match="cannot write (to )?the run folder"):
        trainer.fit()
    assert trainer.state.global_step == 0


def test_precision_resolves_to_bfloat16_only_where_asked_or_native():
    cpu = torch.device("cpu")
    assert network_dtype("float32", cpu) is None
    assert network_dtype("bfloat16", cpu) is torch.bfloat16
    assert network_dtype("auto", cpu) is (torch.bfloat16 if native_bfloat16(cpu) else None)
    assert network_dtype("auto", torch.device("cuda")) is None


def test_bfloat16_products_train_like_float32(tmp_path, tiny_raw):
    runs = {precision: make_trainer(tmp_path, tiny_raw, f"train.precision={precision}", "train.epochs=5",
                                    name=precision) for precision in ("float32", "bfloat16")}
    assert runs["float32"].network_dtype is None and runs["bfloat16"].network_dtype is torch.bfloat16
    val = {}
    for precision, trainer in runs.items():
        assert trainer.fit()["network_precision"] == precision
        val[precision] = dataset_elbo(trainer.model, trainer.data.val, 50, seed=1)["elbo"]
    # the same seed and data: the runs part only by rounding, and end within Monte-Carlo noise
    assert val["bfloat16"] != val["float32"]
    assert abs(val["bfloat16"] - val["float32"]) < 3.0, val
    assert runs["bfloat16"].model.network_dtype is None  # evaluation outside the steps stays float32


# ---------------------------------------------------------------- schedules, weight averaging, time budgets

@pytest.mark.parametrize("recipe", [
    ("train.epochs=4", "optim.schedule=warmup_cosine", "optim.warmup_epochs=1", "train.ema_decay=0.9"),
    # at this lr the validation ELBO of epoch 5 is worse than epoch 4's: epoch 6 runs at half the lr
    ("train.epochs=6", "optim.schedule=plateau", "optim.plateau_patience=0", "train.ema_decay=0.5", "optim.lr=0.1"),
])
@pytest.mark.parametrize("interrupt_at", [7, 19, 45])  # mid-epoch, the end of the first epoch, later
def test_a_resumed_run_with_a_schedule_and_averaged_weights_ends_bit_for_bit_the_same(tmp_path, tiny_raw, recipe,
                                                                                       interrupt_at):
    reference, second = resumed_like_reference(lambda name: make_trainer(tmp_path, tiny_raw, *recipe, name=name),
                                               interrupt_at)
    assert second.schedule.state_dict() == reference.schedule.state_dict()
    assert_same_tensors(reference.ema.state_dict(), second.ema.state_dict())
    records = read_jsonl(reference.run_dir / "metrics.jsonl")
    assert len({r["lr"] for r in records}) > 1  # the schedule moved the lr


def test_the_averaged_weights_are_a_moving_average_of_the_steps_weights(tmp_path, tiny_raw):
    decay = 0.8
    trainer = make_trainer(tmp_path, tiny_raw, "train.max_steps=5", f"train.ema_decay={decay}")
    after_steps, average_in = [], trainer.step.after_update

    def record_then_average():
        after_steps.append([p.detach().clone() for p in trainer.model.parameters()])
        average_in()

    trainer.step.after_update = record_then_average
    summary = trainer.fit()
    assert len(after_steps) == 5 and summary["weights"] == "ema"
    average = after_steps[0]  # torch's EMA starts at the first step's weights
    for weights in after_steps[1:]:
        average = [decay * a + (1 - decay) * w for a, w in zip(average, weights)]
    for mine, expected in zip(trainer.ema.module.parameters(), average):
        torch.testing.assert_close(mine, expected, rtol=1e-6, atol=1e-7)
    assert int(trainer.ema.n_averaged) == 5
    # validation, the kept weights and model.safetensors are the average's
    saved, _ = load_tensors(trainer.run_dir / WEIGHTS)
    for name, value in trainer.ema.module.named_parameters():
        assert torch.equal(saved[name], value), name
    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    val = dataset_elbo(trainer.ema.module, trainer.data.val, 50, seed=trainer.config.data.eval_seed)
    assert records[-1]["val_elbo"] == pytest.approx(val["elbo"], abs=1e-4)


def test_a_time_budget_stops_the_run_and_a_larger_one_trains_on(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=500", "train.time_budget=0.002",
                           "optim.schedule=warmup_cosine")
    summary = trainer.fit()
    assert summary["stop_reason"] == "time budget of 0.002 min spent"
    assert 1 <= summary["epochs_run"] < 500
    assert trainer.state.planned_epochs <= 500 and not trainer.reopen()
    message = finished_message(trainer.folder, trainer.config, trainer.state)
    assert message.endswith("--set train.time_budget=0.004")
    assert extended_config(trainer.config, ["train.time_budget=0.004"]).train.time_budget == 0.004
    more = tiny_config(f"train.epochs={summary['epochs_run'] + 1}", "train.time_budget=10",
                       "optim.schedule=warmup_cosine")
    second = Trainer(more, trainer.run_dir, trainer.data, progress=False, log=lambda *a: None)
    second.load_checkpoint()
    assert second.reopen()
    assert second.fit()["stop_reason"] == f"completed {summary['epochs_run'] + 1} epochs"


def test_a_budgeted_run_prints_epoch_lines_spaced_by_its_minutes(tmp_path, tiny_raw):
    # epochs=100000 is a bound a budget never reaches: spacing lines by it printed only epoch 1
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=100000", "train.time_budget=0.05",
                           "train.compile=false")
    lines = []
    trainer.log = lines.append
    summary = trainer.fit()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert summary["epochs_run"] > 10
    assert 3 <= len(epoch_lines) <= min(102, summary["epochs_run"])
    assert epoch_lines[-1].startswith(f"epoch {summary['epochs_run']:3d} ")


def test_warmup_cosine_fits_its_cosine_to_the_time_budget(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=100", "train.time_budget=1",
                           "optim.schedule=warmup_cosine", "optim.warmup_epochs=2", "optim.lr=0.002")
    state, steps = trainer.state, trainer.steps_per_epoch
    trainer._elapsed = lambda: 6.0 * (state.epoch + state.step_in_epoch / steps)  # six seconds an epoch
    summary = trainer.fit()
    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    assert trainer.state.planned_epochs == 10 and summary["stop_reason"] == "time budget of 1 min spent"
    assert [r["lr"] for r in records] == [learning_rate(trainer.config.optim, e, 10) for e in range(10)]
    assert records[-1]["lr"] == pytest.approx(0.002 * trainer.config.optim.min_lr_ratio)


def test_the_budget_plan_leaves_out_the_first_epochs_compiling_and_follows_the_pace(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=1000", "train.time_budget=1",
                           "optim.schedule=warmup_cosine", "optim.lr=0.002")
    state, steps = trainer.state, trainer.steps_per_epoch
    # the first epoch takes 20 s (compiling), then 2 s an epoch, then from epoch 11 on 4 s (a busy machine)
    def elapsed():
        e = state.epoch + state.step_in_epoch / steps
        return 20 * min(e, 1) + 2 * min(max(e - 1, 0), 9) + 4 * max(e - 10, 0)
    trainer._elapsed = elapsed
    plans = []
    plan = trainer._plan_to_budget
    trainer._plan_to_budget = lambda: (plan(), plans.append(state.planned_epochs))
    summary = trainer.fit()
    assert plans[0] == 3  # after the first epoch: 60 s / 20 s, short, as compiling was in it
    assert plans[1] == 2 + 19  # then 38 s left at 2 s an epoch (the first epoch's 20 s left out of the pace)
    assert plans[8] == 9 + 12  # 24 s left after nine epochs: twelve more at 2 s an epoch
    assert plans[10] == 11 + 8  # after one 4 s epoch the pace is 2.2 s: 18 s left hold eight
    assert summary["stop_reason"] == "time budget of 1 min spent"
    assert plans[-1] == summary["epochs_run"] < 19  # slower epochs shortened the plan, to the budget's end
    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    assert records[-1]["lr"] == pytest.approx(0.002 * trainer.config.optim.min_lr_ratio)  # the cosine ran out


def test_training_flushes_denormals_and_gives_the_setting_back(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=1")
    seen = []
    check = trainer.guard.check_loss
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    trainer.guard.check_loss = lambda loss: (seen.append((tiny * 1.0).item()), check(loss))[1]
    torch.set_flush_denormal(False)
    trainer.fit()
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals (torch.set_flush_denormal returned False)")
    assert seen and set(seen) == {0.0}  # inside training, 1e-40 * 1 rounds to zero
    assert (tiny * 1.0).item() != 0.0  # and after it, not


def test_a_checkpoint_from_before_schedules_were_kept_resumes_at_its_epochs_lr(tmp_path, tiny_raw):
    settings = ("train.epochs=3", "optim.schedule=burda", "optim.schedule_scale=0.1")
    trainer = make_trainer(tmp_path, tiny_raw, *settings, "train.epochs=2")
    trainer.fit()
    tensors, meta = trainer.folder.load_checkpoint()
    state = json.loads(meta.pop("schedule") and meta["state"])
    state.pop("planned_epochs")
    meta["state"] = json.dumps(state)
    trainer.folder.save_checkpoint(tensors, meta)
    old = Trainer(tiny_config(*settings), trainer.run_dir, trainer.data, progress=False, log=lambda *a: None)
    old.load_checkpoint()
    assert old.reopen() and old.schedule.last_epoch == 2
    assert old.optimizer.param_groups[0]["lr"] == learning_rate(old.config.optim, 2)


# ---------------------------------------------------------------- small data sets: steps, not epochs

def test_min_steps_raises_the_epochs_of_a_small_set(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=1", "train.min_steps=40")  # 500 / 32: 16 steps an epoch
    assert trainer.epochs == 3 and trainer.planned_steps() == 48
    summary = trainer.fit()
    assert (summary["epochs_run"], summary["steps"], summary["stop_reason"]) == (3, 48, "completed 3 epochs")


def test_a_run_of_one_epoch_says_one_epoch(tmp_path, tiny_raw):
    summary = make_trainer(tmp_path, tiny_raw, "train.epochs=1").fit()
    assert summary["stop_reason"] == "completed 1 epoch"


def test_early_stopping_waits_for_min_steps(tmp_path, tiny_raw, monkeypatch):
    import vaelab.training.loop as loop

    # The validation ELBO never improves after the first epoch: patience 1 alone stops at epoch 2.
    monkeypatch.setattr(loop, "dataset_elbo", lambda *a, **k: {"elbo": -100.0, "reconstruction": -90.0, "kl": 10.0})
    alone = make_trainer(tmp_path, tiny_raw, "train.epochs=10", "train.patience=1", name="alone").fit()
    assert alone["epochs_run"] == 2 and alone["stop_reason"] == "early stop: no better validation ELBO for 1 epoch"
    waits = make_trainer(tmp_path, tiny_raw, "train.epochs=10", "train.patience=1", "train.min_steps=70",
                         name="waits").fit()
    assert (waits["epochs_run"], waits["steps"]) == (5, 80) and waits["stop_reason"].startswith("early stop")


def test_a_run_of_many_short_epochs_logs_about_a_hundred_of_them(tmp_path, tiny_raw):
    said = []
    trainer = make_trainer(tmp_path, tiny_raw, "train.batch_size=500", "train.epochs=1", "train.min_steps=120")
    trainer.log = said.append  # one step an epoch, 120 epochs
    trainer.fit()
    logged = [int(line.split()[1]) for line in said if line.startswith("epoch ")]
    assert logged == [1, *range(2, 121, 2)]
    assert len(read_jsonl(trainer.run_dir / "metrics.jsonl")) == 120  # every epoch is still recorded


# ---------------------------------------------------------------- train.validate_every

def _validated(records):
    return [r["epoch"] for r in records if "val_elbo" in r]


def test_validate_every_validates_every_nth_and_the_last_epoch_and_keeps_the_best_of_those(tmp_path, tiny_raw):
    # at this lr the validation ELBO goes up and down: the best epoch of all is rarely a validated one
    reference = make_trainer(tmp_path, tiny_raw, "train.epochs=12", "optim.lr=0.1", name="every")
    reference.fit()
    every = read_jsonl(reference.run_dir / "metrics.jsonl")

    def due(n):
        return [e for e in range(1, 13) if e % n == 0 or e == 12]

    def best_of(epochs):
        return max((every[e - 1] for e in epochs), key=lambda r: r["val_elbo"])["epoch"]

    # an N for which keeping the best validated epoch differs from keeping the best or the last epoch
    n = next((n for n in (3, 4, 5, 2) if best_of(due(n)) not in (best_of(range(1, 13)), 12)), None)
    assert n is not None, [r["val_elbo"] for r in every]
    sparse = make_trainer(tmp_path, tiny_raw, "train.epochs=12", "optim.lr=0.1", f"train.validate_every={n}",
                          name="sparse")
    summary = sparse.fit()
    records = read_jsonl(sparse.run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == list(range(1, 13)) and _validated(records) == due(n)
    for mine, theirs in zip(records, every):  # validation draws no training randomness: the same steps
        train_keys = [k for k in theirs if k.startswith("train_") or k in ("step", "lr")]
        assert {k: mine[k] for k in train_keys} == {k: theirs[k] for k in train_keys}
        val_keys = {k: theirs[k] for k in ("val_elbo", "val_reconstruction", "val_kl")}
        assert {k: mine[k] for k in val_keys if k in mine} == (val_keys if mine["epoch"] in due(n) else {})
    best = every[best_of(due(n)) - 1]
    assert (summary["best_epoch"], summary["best_val_elbo"]) == (best["epoch"], best["val_elbo"])
    assert RunFolder(sparse.run_dir).kept_epoch()["epoch"] == best["epoch"]
    weights, _ = load_tensors(sparse.run_dir / WEIGHTS)
    sparse.model.load_state_dict(weights)
    kept = dataset_elbo(sparse.model, sparse.data.val, 50, seed=sparse.config.data.eval_seed)
    assert kept["elbo"] == pytest.approx(best["val_elbo"], abs=1e-4)


def test_validate_every_stops_early_on_a_validation_with_patience_counted_in_epochs(tmp_path, tiny_raw):
    reference = make_trainer(tmp_path, tiny_raw, "train.epochs=30", "optim.lr=0.05", name="every")
    reference.fit()
    every = read_jsonl(reference.run_dir / "metrics.jsonl")
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=30", "optim.lr=0.05", "train.validate_every=2",
                           "train.patience=3", name="sparse")
    summary = trainer.fit()
    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    # what the rule says, replayed on the uninterrupted run's numbers: at each even epoch, stop once
    # 3 epochs or more have passed since the best even epoch so far
    best_epoch, best = 0, -math.inf
    for epoch in range(2, 31, 2):
        if every[epoch - 1]["val_elbo"] > best:
            best_epoch, best = epoch, every[epoch - 1]["val_elbo"]
        elif epoch - best_epoch >= 3:
            break
    assert epoch < 30 and summary["stop_reason"].startswith("early stop")
    assert len(records) == summary["epochs_run"] == epoch and _validated(records) == list(range(2, epoch + 1, 2))
    assert (summary["best_epoch"], summary["best_val_elbo"]) == (best_epoch, best)


@pytest.mark.parametrize("stop", [("train.time_budget=0.002", "train.epochs=500"), ("train.max_steps=45",),
                                  ("train.max_steps=38",)])  # mid-epoch by time and by steps, at an epoch's end
def test_the_epoch_that_ends_a_run_is_validated_whatever_ends_it(tmp_path, tiny_raw, stop):
    trainer = make_trainer(tmp_path, tiny_raw, "train.validate_every=1000", *stop)
    summary = trainer.fit()
    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    assert _validated(records) == [summary["epochs_run"]] == [summary["best_epoch"]]
    assert summary["best_val_elbo"] == records[-1]["val_elbo"]


def test_a_plateau_schedule_moves_only_on_validations(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=16", "optim.schedule=plateau", "optim.plateau_patience=0",
                           "optim.lr=0.1", "train.validate_every=2")
    trainer.fit()
    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    # torch's own plateau schedule, told the validated epochs' ELBOs alone, gives each epoch's lr
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0, min_lr=0.001)
    expected = []
    for record in records:
        expected.append(optimizer.param_groups[0]["lr"])
        if "val_elbo" in record:
            plateau.step(record["val_elbo"])
    assert [r["lr"] for r in records] == expected
    assert len(set(expected)) > 1  # at this lr a validation comes out worse than the one before
@pytest.mark.parametrize("recipe", [
    ("train.epochs=7",),
    ("train.epochs=8", "optim.schedule=plateau", "optim.plateau_patience=0", "optim.lr=0.1", "train.patience=3"),
])
@pytest.mark.parametrize("interrupt_at", [7, 19, 38, 60])  # mid-epoch, the end of a skipped and of a validated epoch
def test_a_run_validated_every_few_epochs_resumes_bit_for_bit(tmp_path, tiny_raw, recipe, interrupt_at):
    recipe = (*recipe, "train.validate_every=2")
    reference = make_trainer(tmp_path, tiny_raw, *recipe, name="reference")
    summary = reference.fit()
    second = interrupted_and_reloaded(make_trainer(tmp_path, tiny_raw, *recipe, name="resumed"), interrupt_at)
    assert second.state.global_step == interrupt_at
    resumed = second.fit()
    assert {k: resumed[k] for k in ("test_elbo", "best_epoch", "best_val_elbo", "stop_reason", "weights_sha256")} == {
        k: summary[k] for k in ("test_elbo", "best_epoch", "best_val_elbo", "stop_reason", "weights_sha256")}
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    records = read_jsonl(reference.run_dir / "metrics.jsonl")
    assert _strip_seconds(read_jsonl(second.run_dir / "metrics.jsonl")) == _strip_seconds(records)
    assert 0 < len(_validated(records)) < len(records)


def test_an_iwae_run_keeps_the_weights_of_its_best_validation_bound_not_of_its_best_elbo(tmp_path, tiny_raw):
    # at a high rate the 5-sample bound keeps rising while the ELBO of the same weights peaks early:
    # kept by the ELBO, the run would keep an early epoch, and lose what IWAE training gained. Which
    # rate shows it depends on the CPU's rounding (AVX2 and AVX-512 part after a few epochs), so the
    # first rate that does is the case this test is for
    for lr in (0.03, 0.04, 0.05, 0.02, 0.035, 0.045, 0.025):
        trainer = make_trainer(tmp_path, tiny_raw, "train.epochs=8", f"optim.lr={lr}", "objective.name=iwae",
                               "objective.samples=5", name=f"lr-{lr}")
        summary = trainer.fit()
        records = read_jsonl(trainer.run_dir / "metrics.jsonl")
        by_bound = max(records, key=lambda r: r["val_bound"])
        if by_bound["epoch"] != max(records, key=lambda r: r["val_elbo"])["epoch"]:
            break
    else:
        pytest.fail("at no rate did the best bound and the best ELBO fall at different epochs")
    assert (summary["best_epoch"], summary["best_val_bound"]) == (by_bound["epoch"], by_bound["val_bound"])
    assert summary["best_val_elbo"] == by_bound["val_elbo"] and summary["bound_k"] == 5
    assert summary["selected_by"] == "validation IWAE bound (k = 5)"
    assert RunFolder(trainer.run_dir).kept_epoch()["epoch"] == by_bound["epoch"]
    weights, _ = load_tensors(trainer.run_dir / WEIGHTS)
    trainer.model.load_state_dict(weights)
    kept = dataset_elbo(trainer.model, trainer.data.val, 50, 5, seed=trainer.config.data.eval_seed, bound_k=5)
    assert kept["bound"] == pytest.approx(by_bound["val_bound"], abs=1e-4)
    test = dataset_elbo(trainer.model, trainer.data.test, 50, 5, seed=trainer.config.data.eval_seed, bound_k=5)
    assert summary["test_bound"] == pytest.approx(test["bound"], abs=1e-4) and test["bound"] >= test["elbo"]


def test_an_elbo_run_records_no_bound_and_says_it_kept_its_weights_by_the_elbo(tmp_path, tiny_raw):
    summary = make_trainer(tmp_path, tiny_raw, "train.epochs=1").fit()
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert summary["selected_by"] == "validation ELBO" and "test_bound" not in summary
    assert all("val_bound" not in r for r in records)


def test_a_kept_bound_survives_a_checkpoint_and_an_old_checkpoint_reads_without_one():
    state = TrainState(best_val_elbo=-90.5, best_val_bound=-88.25)
    assert TrainState.from_json(state.to_json()) == state
    assert TrainState.from_json(TrainState().to_json()).best_val_bound == -math.inf
    assert TrainState.from_json('{"best_val_elbo": -90.5}').best_val_bound == -math.inf


def test_train_init_starts_from_a_runs_kept_weights_and_records_their_fingerprint(tmp_path, tiny_raw):
    source = make_trainer(tmp_path, tiny_raw, "train.epochs=1", name="source")
    source.fit()
    weights, _ = load_tensors(source.run_dir / WEIGHTS)
    tuned = make_trainer(tmp_path, tiny_raw, "train.epochs=1", "objective.name=iwae", "objective.samples=3",
                         f"train.init_from={source.run_dir}", name="tuned")
    assert_same_tensors(weights, tuned.model.state_dict())
    assert_same_tensors(weights, tuned.best_weights)  # before any validation, the kept weights are the start's
    summary = tuned.fit()
    assert summary["init"] == {"from": str(source.run_dir), "weights_sha256": RunFolder(source.run_dir).fingerprint()}
    # a fresh model's first validation is far below the trained one's: this one starts where the source ended
    fresh = make_trainer(tmp_path, tiny_raw, "train.epochs=1", "objective.name=iwae", "objective.samples=3",
                         name="fresh").fit()
    assert summary["best_val_elbo"] > fresh["best_val_elbo"] + 20


def test_train_init_may_bound_the_log_variances_the_weights_were_trained_without(tmp_path, tiny_raw):
    source = make_trainer(tmp_path, tiny_raw, "train.epochs=1", name="source")
    source.fit()
    tuned = make_trainer(tmp_path, tiny_raw, "train.epochs=1", "model.log_var_bounds=[-6, 2]",
                         f"train.init_from={source.run_dir}", name="bounded")
    assert tuned.model.latent.log_var_bounds == (-6.0, 2.0)
    assert_same_tensors(load_tensors(source.run_dir / WEIGHTS)[0], tuned.model.state_dict())


def test_train_init_refuses_another_model_and_a_missing_folder_in_one_line(tmp_path, tiny_raw):
    source = make_trainer(tmp_path, tiny_raw, "train.epochs=1", name="source")
    source.fit()
    with pytest.raises(RunFolderError, match=r"^train.init_from: .*source has another model \(model.latent_dim = 2, "
                                             r"this run's 3\); its model section must be this run's$"):
        make_trainer(tmp_path, tiny_raw, "model.latent_dim=3", f"train.init_from={source.run_dir}", name="other")
    with pytest.raises(RunFolderError, match=r"^train.init_from: .*nowhere: no such run folder$"):
        make_trainer(tmp_path, tiny_raw, f"train.init_from={tmp_path / 'nowhere'}", name="missing")
    with pytest.raises(RunFolderError, match=r"^train.init_from: pretrained:nothing: no such shipped model"):
        make_trainer(tmp_path, tiny_raw, "train.init_from=pretrained:nothing", name="unknown")


def test_a_fine_tuned_run_resumes_from_its_checkpoint_without_its_source(tmp_path, tiny_raw):
    import shutil
    source = make_trainer(tmp_path, tiny_raw, "train.epochs=1", name="source")
    source.fit()
    digest = RunFolder(source.run_dir).fingerprint()
    first = make_trainer(tmp_path, tiny_raw, "train.epochs=2", f"train.init_from={source.run_dir}", name="tuned")
    first.fit()
    shutil.rmtree(source.run_dir)
    config = tiny_config("train.epochs=3", f"train.init_from={source.run_dir}")
    again = Trainer(config, first.run_dir, first.data, progress=False, log=lambda *a: None)
    again.load_checkpoint()
    assert again.reopen()
    assert again.fit()["init"]["weights_sha256"] == digest
