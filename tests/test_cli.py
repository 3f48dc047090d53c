"""The command line (tl_research/cli/command_line.py, launch.py, the similarity command): config_flags' typed
overrides, the sweep-override rule, the flags and their defaults, and one `error:` line with exit code 2 for
each kind of bad input, all before any training (sweep.run_sweep is replaced where a run would start)."""
import pathlib

import pytest

import launch
from tl_research.cli import command_line, similarity_command
from tl_research.analysis import results
from tl_research.sweeps import sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]

CONFIG = '''
from tl_research.config import base_config, axis, product
def get_config(arg=None):
    c = base_config()
    c.name = "cli" if arg is None else "cli-" + arg
    c.model.width = 4
    return c
def get_sweep(arg=None):
    return product(axis("seed", [0, 1]), axis("schedule.lr", [0.1, 0.01] if arg is None else [float(arg)]))
'''

NO_ARG = '''
from tl_research.config import base_config
def get_config():
    c = base_config()
    c.name = "plain"
    return c
'''


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "cli.py"
    path.write_text(CONFIG)
    return path


def parse(argv):
    return command_line.parse(argv, launch.define_flags, usage=launch.USAGE,
                              default_config="configs/quickstart.py", flag_list=launch.FLAG_LIST)


def test_overrides_are_typed_and_an_overridden_swept_key_replaces_the_sweeps_values(config_file, tmp_path):
    cli = parse(["--config", str(config_file), "--config.train.steps=7", "--config.data.classes=(3, 4)",
                 "--config.frozen_depth=all", "--config.report.similarity=False", "--config.augment=flip",
                 "--config.schedule.lr=0.5", "--workdir", str(tmp_path / "w"), "--retry_failed"])
    c = cli.config
    assert c.train.steps == 7 and c.data.classes == (3, 4) and c.frozen_depth == "all"
    assert c.report.similarity is False and tuple(c.augment) == ("flip",) and c.schedule.lr == 0.5
    # schedule.lr is swept: the override replaces its values (duplicates merged); seed still varies
    assert cli.points == [{"seed": 0, "schedule.lr": 0.5}, {"seed": 1, "schedule.lr": 0.5}]
    assert cli.workdir == tmp_path / "w"
    assert cli.flags.retry_failed and not cli.flags.no_progress and not cli.flags.lr_range_test


def test_the_arg_after_the_colon_reaches_get_config_and_get_sweep_and_workdir_defaults_to_the_name(config_file):
    cli = parse([f"--config={config_file}:0.3"])
    assert cli.config.name == "cli-0.3" and cli.points == [{"seed": 0, "schedule.lr": 0.3},
                                                           {"seed": 1, "schedule.lr": 0.3}]
    assert cli.workdir == pathlib.Path("runs") / "cli-0.3"
    plain = tmp = config_file.parent / "plain.py"
    tmp.write_text(NO_ARG)
    cli = parse(["--config", str(plain), "--config.seed=3"])  # get_config() without an argument, no sweep
    assert cli.config.name == "plain" and cli.config.seed == 3 and cli.points == [{}]


def test_no_flags_runs_the_quickstart_sweep(monkeypatch, capsys):
    """`python launch.py`: the quickstart, on two one-core local workers where that is faster (a CPU host
    with two or more cores), else in this process; --jobs=0 or any launcher flag keeps the user's choice."""
    from tl_research.sweeps import launchers
    monkeypatch.chdir(ROOT)
    seen = {}

    def fake_run_sweep(base, points, workdir, progress, retry_failed, echo=print):
        seen.update(name=base.name, points=points, workdir=workdir, retry_failed=retry_failed, how="here")
        return []

    def fake_launch(base, points, workdir, opts, *, only=None, retry_failed=False, echo=print):
        seen.update(name=base.name, points=points, workdir=workdir, retry_failed=retry_failed,
                    how=(opts.launcher, opts.jobs, opts.wait, opts.sources_first, opts.stop_on_interrupt))
        return []

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    monkeypatch.setattr(launchers, "launch", fake_launch)
    monkeypatch.setattr(results, "write_report", lambda *a: "(table)")
    for helps, argv, how in ((True, [], ("local", 2, True, True, True)), (True, ["--jobs=0"], "here"),
                             (True, ["--config", "configs/quickstart.py", "--launcher=local"], "here"),
                             (False, [], "here"), (False, [], "here")):  # twice: absl flags are per call
        monkeypatch.setattr(launchers, "cpu_workers_help", lambda: helps)
        seen.clear()
        assert launch.main(argv) == 0
        assert seen["name"] == "quickstart" and seen["workdir"] == pathlib.Path("runs") / "quickstart"
        assert len(seen["points"]) > 1 and seen["retry_failed"] is False and seen["how"] == how, (helps, argv)
    assert "quickstart:" in capsys.readouterr().out


def test_lr_range_test_flag(monkeypatch, config_file, tmp_path):
    seen = []
    monkeypatch.setattr(sweep, "range_test", lambda base, workdir, progress: seen.append((base.name, workdir)))
    assert launch.main(["--config", str(config_file), "--lr_range_test", "--workdir", str(tmp_path)]) == 0
    assert seen == [("cli", tmp_path)]


@pytest.mark.parametrize("main", [launch.main, similarity_command.main])
def test_help(main, capsys):
    assert main(["-h"]) == 0 and "--workdir" in capsys.readouterr().out
    assert main(["--help"]) == 0 and "--config" in capsys.readouterr().out


@pytest.mark.parametrize("args, needles", [
    (["--config.model.widht=3"], ["config.model.widht=3 is not allowed (no such key)", "model.width (the closest)"]),
    (["--config.trian.steps=3"], ["config.trian.steps=3", "train (the closest)"]),
    (["--config.train.steps=abc"], ["config.train.steps='abc' is not allowed", "a value of type int"]),
    (["--config.schedule.lr=fast"], ["config.schedule.lr='fast'", "a value of type float"]),
    (["--config.report.similarity=maybe"], ["config.report.similarity='maybe'", "a value of type bool"]),
    (["--frobnicate"], ["command line: '--frobnicate' is not allowed", "--retry_failed"]),
    (["--no_progres"], ["'--no_progres'", "no_progress"]),  # absl's suggestion
    (["stray"], ["command line: 'stray'", "not a flag"]),
    (["--workdir"], ["--workdir=None", "a value after the flag"]),
])
def test_bad_input_is_one_line_and_exit_code_2(config_file, tmp_path, capsys, args, needles):
    assert launch.main(["--config", str(config_file), "--workdir", str(tmp_path / "w"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "w").exists()


def test_bad_config_files_are_one_line_and_exit_code_2(tmp_path, capsys):
    no_get_config = tmp_path / "empty.py"
    no_get_config.write_text("x = 1\n")
    needs_arg = tmp_path / "needs_arg.py"
    needs_arg.write_text("def get_config(arg):\n    raise AssertionError\n")
    alike = tmp_path / "alike.py"  # two labels one slug apart: one run directory, the second never run
    alike.write_text("from tl_research.config import base_config\ndef get_config():\n    return base_config()\n"
                     "def get_sweep():\n    return [{'label': 'a b'}, {'label': 'a_b'}]\n")
    for argv, needles in [
        (["--config", str(tmp_path / "missing.py")], ["missing.py", "no such file"]),
        (["--config", str(tmp_path / "missing.py"), "--config.seed=1"], ["no such file"]),
        (["--config", str(no_get_config)], ["a file defining get_config(arg=None)"]),
        (["--config", str(needs_arg)], ["--config=", "missing 1 required positional argument"]),
        (["--config", str(alike)], ["get_sweep points: {'label': 'a_b'}", "run id 'label-a_b'"]),
    ]:
        for main in (launch.main, similarity_command.main):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert err.startswith("error: ") and len(err.splitlines()) == 1, err
            for needle in needles:
                assert needle in err, err
    assert similarity_command.main([]) == 2  # the command has no default config
    assert "--config=None" in capsys.readouterr().err


def test_a_config_error_raised_by_get_config_is_shown_as_is(capsys):
    # configs/frozen_depth_folder.py refuses an ARG without a weights part with its own ConfigError
    assert launch.main([f"--config={ROOT / 'configs' / 'frozen_depth_folder.py'}:photos"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "PHOTOS,WEIGHTS" in err, err


def test_a_config_file_setting_an_unknown_key_names_it_and_the_closest_key(tmp_path, capsys):
    typo = tmp_path / "typo.py"
    typo.write_text("from tl_research.config import base_config, copy_config\n"
                    "def get_config():\n    c = base_config()\n    c.source = copy_config(c)\n"
                    "    c.evals.fewshot = dict(type='fewshot')  # evals entries are the file's to name\n"
                    "    c.source.train.stpes = 3\n    return c\n")
    for argv, needles in [([str(typo)], ["config.train.stpes=3", "train.steps (the closest)", "typo.py"]),
                          ([f"{typo}:5"], ["typo.py:5", "takes no argument"]),
                          (["--workdir"], ["--config='--workdir'", "a flag"])]:
        assert launch.main(["--config", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(n in err for n in needles), err
