"""The sweep spec without Ray: flags and sweep files -> jobs, and user mistakes as one line, exit 2."""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys

import pytest

from hybench.orchestrator.cli import build_parser, main
from hybench.orchestrator.sweep import SETTINGS, expand, resolve
from hybench.orchestrator.sweep_cli import submit_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _specs(argv: list[str], repeats: str | None = "1"):
    """The jobs of `hybench sweep argv`, run once each unless `repeats` is None (the default, 3)."""
    extra = ["--repeats", repeats] if repeats is not None and "--repeats" not in argv else []
    args = build_parser().parse_args(["sweep", *argv, *extra])
    return expand(resolve({name: getattr(args, name) for name in SETTINGS}, args.sweep_file))


def test_no_arguments_is_the_quick_demo_sweep():
    runs = _specs([], repeats=None)
    throughput = [s for s in runs if s.task == "throughput"]
    recall = [s for s in runs if s.task == "recall"]
    assert len(throughput) == 3 * 3 * 4 and len(recall) == 3 * 4 and len(runs) == 48
    assert {s.num_benchmark_iters for s in runs} == {1}
    # Round by round: every job once, then every throughput job again (a quality job scores fixed
    # sequences: once); each run its own job, ids stable from the first.
    assert [s.repeat for s in runs] == [0] * 24 + [1] * 12 + [2] * 12 and {s.repeat for s in recall} == {0}
    assert [s.job_id for s in runs[:24]] == [s.job_id for s in _specs([])]
    assert len({s.job_id for s in runs}) == 48
    assert all(dataclasses.replace(a, repeat=0) in runs[:24] for a in runs[24:])
    specs = runs[:24]
    assert {s.model for s in specs} == {"tiny-recall"} and {s.window for s in specs} == {32}
    assert {(s.config, s.task) for s in specs} == {(c, t) for c in ("full", "sliding", "hybrid")
                                                    for t in ("throughput", "recall")}
    assert sorted({s.input_len for s in specs}) == [128, 256, 512, 1024]  # longer than the window
    assert len({s.sweep_id for s in specs}) == 1 and specs[0].sweep_id.startswith("sweep-")
    assert [s.job_id for s in specs] == [s.job_id for s in _specs([])]  # deterministic, so re-runs resume
    # A model of the user's runs throughput jobs unless --tasks says otherwise; so do explicit --tasks.
    assert {s.task for s in _specs(["--models", "tiny-llama"])} == {"throughput"}
    assert {s.task for s in _specs(["--tasks", "throughput"])} == {"throughput"}


def test_lists_fan_out_and_full_runs_once_per_cell():
    specs = _specs(["--models", "tiny-llama", "--configs", "full,sliding,hybrid", "--windows", "1024,2048",
                    "--input-lengths", "512,4096",
                    "--output-lens", "8,16", "--seed", "1,2"])
    # sliding and hybrid: 2 windows each; full ignores the window: once, under the first one
    assert len(specs) == (2 + 2 + 1) * 2 * 2 * 2
    assert {s.window for s in specs if s.config == "full"} == {1024}
    assert len({s.job_id for s in specs}) == len(specs)
    assert len(_specs(["--models", "tiny-llama", "--input-lengths", "64,64,32"])) == 3 * 2  # a repeated value: one job


def test_hf_peer_runs_the_full_config_only():
    specs = _specs(["--models", "tiny-llama", "--engines", "hybrid,hf", "--input-lengths", "64"])
    assert sorted((s.engine, s.config) for s in specs) == [
        ("hf", "full"), ("hybrid", "full"), ("hybrid", "hybrid"), ("hybrid", "sliding")]


def test_sweep_file_equals_flags_and_flags_override_it(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("models: tiny-llama\nconfigs: [sliding, hybrid]\nwindows: [16, 32]\n"
                     "input_len: [64]\nnum-prompts: 3\noutput_len: 4\nenforce_eager: true\n"
                     "max_model_len: null\nresults: elsewhere\nsweep_id: mine\n")
    from_file = _specs([str(sweep)])
    from_flags = _specs(["--models", "tiny-llama", "--configs", "sliding,hybrid", "--windows", "16,32",
                         "--input-lengths", "64", "--num-prompts", "3", "--output-len", "4",
                         "--enforce-eager", "true", "--sweep-id", "mine"])
    assert from_file == from_flags and all(s.enforce_eager for s in from_file)
    overridden = _specs([str(sweep), "--windows", "8", "--sweep-id", "other"])
    assert {s.window for s in overridden} == {8} and {s.num_prompts for s in overridden} == {3}
    assert {s.sweep_id for s in overridden} == {"other"}
    args = build_parser().parse_args(["sweep", str(sweep)])
    assert resolve({name: getattr(args, name) for name in SETTINGS}, str(sweep))["results"] == "elsewhere"


@pytest.mark.parametrize("text,message", [
    ("models: [tiny-llama\n", "not valid YAML at line"),
    ("- tiny-llama\n", "a sweep file maps field names"),
    ("modles: tiny-llama\n", "unknown field 'modles'"),
    ("windows: [16, abc]\n", "windows: "),
    ("configs: banded\n", "configs: --config: banded not one of full, sliding, hybrid"),
    ("windows: 0\n", "--windows must be at least 1, got 0"),
    ("model: tiny-llama\nmodels: tiny-llama\n", "'models' sets model, which an earlier field already set"),
    ("results: [a, b]\n", "results: takes one value"),
    ("workers: 0\n", "workers must be at least 1"),
    ("max_retries: lots\n", "max_retries: invalid value 'lots'"),
])
def test_bad_sweep_file_is_one_line_naming_the_field(tmp_path, monkeypatch, capsys, text, message):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == ["sweep.yaml"]  # nothing written


@pytest.mark.parametrize("argv,message", [
    (["--windows", "-4"], "--windows must be at least 1, got -4"),
    (["--input-lengths", "40000"], "exceeds the 2048 positions tiny-recall supports"),
    (["--models", "no-such-model"], "unknown model 'no-such-model'"),
    (["--gpus-per-worker", "-1"], "gpus_per_worker must be >= 0"),
    (["missing.yaml"], "cannot read sweep file missing.yaml"),
])
def test_bad_values_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_bad_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--configs", "full,banded"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "banded not one of full, sliding, hybrid" in err and err.count("\n") == 1


def test_submit_wraps_ray_job_submit():
    args = build_parser().parse_args(["submit", "--ray-address", "http://head:8265", "--",
                                      "--models", "tiny-llama", "--results", "s3://bucket/r"])
    command = submit_command(args)
    assert os.path.basename(command[0]) == "ray"
    assert command[1:] == ["job", "submit", "--working-dir", ".", "--address", "http://head:8265", "--", "sh", "-c",
                           f'PATH="$PATH:{os.path.dirname(sys.executable)}" exec hybench sweep "$@"', "hybench",
                           "--address", "auto", "--models", "tiny-llama", "--results", "s3://bucket/r"]


def test_submit_finds_the_ray_beside_its_python_when_path_lacks_it(monkeypatch):
    """A venv used without activation: `ray` is not on PATH but sits beside sys.executable."""
    monkeypatch.setenv("PATH", "/nonexistent")
    args = build_parser().parse_args(["submit", "--", "--models", "tiny-llama"])
    assert submit_command(args)[0] == os.path.join(os.path.dirname(sys.executable), "ray")


def test_runner_script_is_the_seed_convention(tmp_path):
    """scripts/run_hybrid_benchmark.sh [MODEL] [RESULTS_DIR] with INPUT_LENGTHS and NUM_PROMPTS from the
    environment becomes a `hybench sweep` whose jobs are those of the original suite."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "hybench").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\n')
    (fake / "hybench").chmod(0o755)
    env = os.environ | {"PATH": f"{fake}:{os.environ['PATH']}", "INPUT_LENGTHS": "256,512", "NUM_PROMPTS": "20"}
    script = os.path.join(REPO, "scripts", "run_hybrid_benchmark.sh")
    subprocess.run([script, "meta-llama/Llama-3.2-3B", "./my_results", "--address", "auto"], env=env, check=True)
    argv = (tmp_path / "args").read_text().splitlines()
    assert argv[0] == "sweep", shlex.join(argv)
    specs = _specs(argv[1:])
    assert len(specs) == (1 + 2) * 2  # full once, sliding and hybrid at window 2048, two input lengths
    assert {s.model for s in specs} == {"meta-llama/Llama-3.2-3B"} and {s.num_prompts for s in specs} == {20}
    assert {(s.output_len, s.num_warmup_iters, s.num_benchmark_iters) for s in specs} == {(128, 3, 10)}
    args = build_parser().parse_args(argv)
    assert (args.results, args.address) == ("./my_results", "auto")


def test_runner_script_finds_the_repos_venv_without_activation(tmp_path):
    """Right after `make demo`: hybench is not on PATH, the repo's .venv/bin holds it."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    script = tmp_path / "scripts" / "run_hybrid_benchmark.sh"
    script.write_text(open(os.path.join(REPO, "scripts", "run_hybrid_benchmark.sh")).read())
    script.chmod(0o755)
    venv_hybench = tmp_path / ".venv" / "bin" / "hybench"
    venv_hybench.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\n')
    venv_hybench.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run([str(script), "tiny-llama", "r"], env=env, check=True, cwd=tmp_path)
    assert (tmp_path / "args").read_text().splitlines()[:3] == ["sweep", "--models", "tiny-llama"]

    venv_hybench.unlink()
    missing = subprocess.run([str(script)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "hybench" in missing.stderr


def test_a_window_that_covers_every_sequence_is_named():
    from hybench.orchestrator.sweep import window_notes
    specs = _specs(["--models", "tiny-llama", "--configs", "full,sliding,hybrid", "--windows", "64,4096",
                    "--input-lengths", "64,96", "--output-lens", "16"])
    notes = window_notes(specs)
    assert len(notes) == 1 and notes[0].startswith("note: window 4096 covers every sequence (at most 112 tokens")
    assert "sliding and hybrid then equal full" in notes[0]


def test_sweep_prints_the_window_note_before_running(tmp_path, monkeypatch, capsys):
    from hybench.orchestrator import driver
    from hybench.orchestrator.sweep import SweepError

    def stop(*args, **kwargs):
        raise SweepError("stopped before running")
    monkeypatch.setattr(driver, "run_sweep", stop)
    assert main(["sweep", "--models", "tiny-llama", "--configs", "sliding", "--windows", "4096",
                 "--input-lengths", "64", "--output-lens", "16", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "hybench sweep: note: window 4096 covers every sequence" in err and "stopped before running" in err
