"""What `trainers run` prints while it trains: quiet start-up, step progress, `--quiet`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainers.cli import app
from trainers.quiet import NOISE, filtered
from trainers.testing import make_tiny_store

REPO = Path(__file__).resolve().parents[1]
#: TensorFlow's and absl's notes as they start (the oneDNN ones by their text: a run's own
#: device line names the oneDNN kernels it trains on).
START_UP_NOISE = ("cuInit", "oneDNN custom operations", "oneDNN supports", "E0000",
                  "absl::InitializeLog")


def _trainers(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The installed `trainers` command in a fresh process, as a user runs it."""
    command = shutil.which("trainers") or pytest.fail("the `trainers` console script is missing")
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the user's own setting, if any, in `env`
    environment.update(env)
    return subprocess.run([command, *args], capture_output=True, text=True, env=environment,
                          timeout=300)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    return make_tiny_store(tmp_path_factory.mktemp("progress") / "tvhi.zarr", size=16, steps=2,
                           per_class=(2, 1, 1))


@pytest.mark.parametrize("backend, model", [("tensorflow", "tvhi_flow"), ("torch", "tvhi_flow"),
                                            ("tensorflow", "frames")])
def test_a_run_shows_no_tensorflow_start_up_notes_and_names_its_device(backend, model,
                                                                        tiny_store, tmp_path):
    """On PyTorch too: Keras' seeding imports TensorFlow wherever it is installed. And for a
    model that transfers: looking for its base asked Keras how a run computes before Keras
    was started quietly, and the notes came twice."""
    if backend == "torch":
        pytest.importorskip("torch")
    proc = _trainers("run", model, "--store", str(tiny_store), "--runs-dir",
                     str(tmp_path / "runs"), "--epochs", "1", KERAS_BACKEND=backend)
    assert proc.returncode == 0, proc.stderr
    for noise in START_UP_NOISE:
        assert noise not in proc.stderr, proc.stderr
    assert ("training on CPU (no GPU found)" in proc.stderr
            or "training on GPU (" in proc.stderr), proc.stderr
    name = {"tvhi_flow": "flow", "frames": "frames"}[model]  # (tvhi_flow: an alias of flow)
    assert f"{name} epoch 1/1:" in proc.stdout


def test_summary_shows_no_tensorflow_start_up_notes_either():
    proc = _trainers("summary", "flow", "--size", "16", "--steps", "2")
    assert proc.returncode == 0, proc.stderr
    for noise in START_UP_NOISE:
        assert noise not in proc.stderr, proc.stderr
    assert "flow at size 16, steps 2: total " in proc.stdout


def test_verbose_lets_the_start_up_notes_through(tiny_store, tmp_path):
    proc = _trainers("run", "tvhi_flow", "--store", str(tiny_store), "--runs-dir",
                     str(tmp_path / "runs"), "--epochs", "1", "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert "training on" in proc.stderr
    assert any(NOISE.match(line) for line in proc.stderr.splitlines()), proc.stderr


def test_the_noise_filter_keeps_what_is_not_a_log_note():
    captured = ("WARNING: All log messages before absl::InitializeLog() is called are written "
                "to STDERR\n"
                "I0000 00:00:1796049365.152925   20553 port.cc:153] oneDNN custom operations\n"
                "E0000 00:00:1796049370.252181   20553 cuda_platform.cc:52] failed call to cuInit\n"
                "To enable the following instructions: AVX2 FMA, in other operations, rebuild\n"
                "Segmentation fault in libfoo\n")
    assert filtered(captured) == "Segmentation fault in libfoo\n"


def test_quiet_prints_no_epoch_lines_but_the_results(tiny_store, tmp_path):
    result = CliRunner().invoke(app, ["run", "tvhi_flow", "--store", str(tiny_store),
                                      "--runs-dir", str(tmp_path / "runs"), "--epochs", "2",
                                      "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "flow epoch" not in result.stdout, result.stdout
    assert "flow: run written to" in result.stdout
    assert "| trained |" in result.stdout


def test_a_long_epoch_reports_its_steps_when_not_on_a_terminal(tiny_store, tmp_path,
                                                               monkeypatch):
    import trainers.fit

    # 8 training samples at batch size 1 are 8 steps: lines at steps 2, 4 and 6.
    monkeypatch.setattr(trainers.fit, "STEP_LINES_MIN_STEPS", 8)
    result = CliRunner().invoke(app, ["run", "tvhi_flow", "--store", str(tiny_store),
                                      "--runs-dir", str(tmp_path / "runs"), "--epochs", "1",
                                      "--batch-size", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    steps = [line.split(": step ")[1].split(",")[0] for line in result.stdout.splitlines()
             if ": step " in line]
    assert steps == ["2/8", "4/8", "6/8"], result.stdout
    assert "\r" not in result.stdout + result.stderr  # no bar in a captured stream


def test_step_progress_draws_a_bar_on_a_terminal(monkeypatch):
    import trainers.fit

    drawn = []

    class Bar:
        def __init__(self, total, **options):
            drawn.append([total, options["desc"], 0])

        def update(self, n):
            drawn[-1][2] += n

        def close(self):
            drawn[-1].append("closed")

    monkeypatch.setattr(trainers.fit, "shows_progress", lambda: True)
    monkeypatch.setattr(trainers.fit, "progress_bar", lambda **options: Bar(**options))
    lines: list[str] = []
    progress = trainers.fit.StepProgress("tvhi_flow", 2, 30, lines.append)
    for epoch in range(2):
        progress.on_epoch_begin(epoch)
        for batch in range(30):
            progress.on_train_batch_end(batch, {"loss": 1.0})
        progress.on_epoch_end(epoch)
    assert drawn == [[30, "tvhi_flow epoch 1/2", 30, "closed"],
                     [30, "tvhi_flow epoch 2/2", 30, "closed"]]
    assert lines == []  # the bar, not lines


def test_a_ctrl_c_during_the_start_up_keeps_its_log_noise_back(capfd):
    """A failed start-up passes on everything it captured, which may explain the failure; a
    Ctrl-C does not, and printed TensorFlow's start-up lines ("Could not find cuda drivers")
    above `error: interrupted`."""
    import os

    import pytest

    from trainers.quiet import _with_stderr_captured

    def noisy(interrupt: bool) -> int:
        os.write(2, b"I0000 00:00:1764.5   123 cuda_executor.cc:1]  Could not find cuda drivers\n")
        if interrupt:
            raise KeyboardInterrupt
        raise RuntimeError("no TensorFlow")

    with pytest.raises(KeyboardInterrupt):
        _with_stderr_captured(lambda: noisy(True))
    assert "cuda" not in capfd.readouterr().err
    with pytest.raises(RuntimeError):
        _with_stderr_captured(lambda: noisy(False))
    assert "Could not find cuda drivers" in capfd.readouterr().err
