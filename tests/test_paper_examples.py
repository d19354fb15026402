"""The paper experiments under examples/paper/, at smoke size (a few steps per run: the numbers
are meaningless; that each script trains, evaluates and writes its results is what is tested).
The real runs are benchmarks: docs/RESULTS.md."""

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import usconvert

PAPER = Path(__file__).resolve().parents[1] / "examples" / "paper"


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("paper")  # shared: the scripts reuse each other's trained networks


def smoke_run(name: str, out: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PAPER / f"{name}.py"), "--smoke", "--jobs", "1", "--out", str(out),
                           *options], capture_output=True, text=True, cwd=PAPER, timeout=600)


def run_script(name: str, out: Path, *options: str, result: str | None = None) -> dict:
    """Run a script at smoke size; its result ``out/<result or name>.json``."""
    process = smoke_run(name, out, *options)
    assert process.returncode == 0, process.stderr[-2000:]
    return json.loads((out / f"{result or name}.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name,table_rows", [("table1", 5), ("table2", 4), ("table3", 6), ("pretrained", 6)])
def test_table_scripts_write_their_tables(out, name, table_rows):
    payload = run_script(name, out)
    assert (payload["data"], payload["seeds"], payload["smoke"]) == ("digits", [0], True)  # what every result records
    lines = payload["markdown"].splitlines()
    assert len(lines) == 2 + table_rows and "±" not in payload["markdown"]  # one seed at smoke size
    errors = payload["errors"]
    assert all(0 <= v <= 100 for per_width in errors.values() for values in per_width.values() for v in values)


@pytest.mark.slow
@pytest.mark.parametrize("name,series", [("figure11", 3), ("figure6", 2), ("figure10", 6)])
def test_figure_scripts_write_spectra_and_plots(out, name, series):
    payload = run_script(name, out)
    assert len(payload["series"]) == series and payload["seeds"] == [0]
    assert all(r["multiply_adds"] > 0 and 0 <= r["top1"] <= 100 for s in payload["series"] for r in s["rows"])
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if name == "figure10":  # the stages are slimmed on a network trained with nonuniform widths
        assert json.loads((out / "nets" / "us-nonuniform-40-epochs-seed0.json").read_text())["config"]["nonuniform"]
        assert set(payload["summary"]) == {s["name"] for s in payload["series"]}  # each against uniform


@pytest.mark.slow
def test_ablations_train_what_they_name(out):
    """Figure 7 and 8 convert with their own k0 and d, Figure 9 trains n widths per step, Table 4
    averages outputs; every other setting is the default US-Net's."""
    spans = {s["name"]: s["rows"][0]["width"] for s in run_script("figure7", out)["series"]}
    assert spans == {"k0 = 0.35": 0.35, "k0 = 0.25": 0.25, "k0 = 0.05": 0.05}
    figure9 = run_script("figure9", out)
    assert len(run_script("figure8", out)["series"]) == 2 and len(figure9["series"]) == 5
    assert set(figure9["train_seconds"]) == {f"{method}-seed0" for method in
                                             ("us-n3", "us", "us-n5", "us-lr-0.8", "us-n5-lr-0.8")}
    assert all(seconds > 0 for seconds in figure9["train_seconds"].values())
    assert all((out / f"figure{n}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in (7, 8, 9))
    table = run_script("table4", out)
    assert set(table["errors"]) == {"US-MobileNetV2", "US-MobileNetV2 + output averaging"}
    assert usconvert.load(out / "nets" / "us-d1-seed0.safetensors").divisor == 1
    assert usconvert.load(out / "nets" / "us-output-averaging-seed0.safetensors").output_averaging
    n5 = json.loads((out / "nets" / "us-n5-seed0.json").read_text())
    assert n5["config"]["widths_per_step"] == 5 and n5["config"]["expect"] == {"min_width": 0.25, "divisor": 8}
    n4 = json.loads((out / "nets" / "us-seed0.json").read_text())["config"]
    for method, config in (("us-lr-0.8", n4), ("us-n5-lr-0.8", n5["config"])):  # the same but 4/5 of the rate
        slower = json.loads((out / "nets" / f"{method}-seed0.json").read_text())["config"]
        assert slower == {**config, "lr": pytest.approx(0.8 * config["lr"])}


@pytest.mark.slow
def test_a_table_on_fashion_mnist_reads_the_installed_files(tmp_path):
    """--data fashion-mnist: the real idx files (.ci/run installs them), a 64-image subset."""
    payload = run_script("table1", tmp_path, "--data", "fashion-mnist")
    assert "fashion-mnist" in payload["experiment"] and payload["data"] == "fashion-mnist"
    record = json.loads((tmp_path / "nets" / "us-seed0.json").read_text())
    assert record["data"] == "fashion-mnist" and record["config"]["data"] == "fashion-mnist"
    assert record["config"]["train_samples"] == 64


@pytest.mark.slow
def test_budgets_trains_the_same_networks_for_each_budget_where_table1_keeps_them(tmp_path):
    """budgets.py: each data setting's runs in OUT/<setting>/nets, as table1.py --data <setting>
    writes them; a table row per network and width, a column per budget; settings that differ
    in more than the epochs (other images) are refused in one line."""
    payload = run_script("budgets", tmp_path, "--budgets", "fashion-mnist-80", "fashion-mnist")
    assert payload["budgets"] == {"fashion-mnist": 40, "fashion-mnist-80": 80}
    assert payload["data"] == "fashion-mnist-80"  # where the results go by default
    assert set(payload["errors"]) == {"us", "inet-0.25"}
    assert set(payload["errors"]["us"]) == {"1", "0.75", "0.5", "0.25"}
    assert set(payload["errors"]["inet-0.25"]) == {"0.25"}
    assert all(set(per_budget) == {"40", "80"} for per_width in payload["errors"].values()
               for per_budget in per_width.values())
    assert payload["markdown"].splitlines()[0] == "| network | width | 40 epochs | 80 epochs |"
    assert len(payload["markdown"].splitlines()) == 2 + 4 + 1
    for budget in ("fashion-mnist", "fashion-mnist-80"):
        record = json.loads((tmp_path / budget / "nets" / "inet-0.25-seed0.json").read_text())
        assert record["data"] == budget and record["config"]["widths"] == [0.25]
        assert (tmp_path / budget / "nets" / "inet-0.25-seed0.evaluations.json").is_file()
    assert set(payload["curves"]) == {f"{m} at {e} epochs" for m in ("us", "inet-0.25") for e in (40, 80)}
    assert (tmp_path / "budgets.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # another US-Net against Table 1's at one budget (its networks already trained), under its own name
    kept = (tmp_path / "budgets.json").read_bytes()
    ablation = run_script("budgets", tmp_path, "--budgets", "fashion-mnist-80", "--methods", "us", "us-n5",
                          "--result", "budgets-n5", result="budgets-n5")
    assert (tmp_path / "budgets.json").read_bytes() == kept and (tmp_path / "budgets-n5.png").is_file()
    assert set(ablation["errors"]["us-n5"]) == {"1", "0.75", "0.5", "0.25"}
    assert ablation["errors"]["us"] == {w: {"80": e["80"]} for w, e in payload["errors"]["us"].items()}
    evaluation, = json.loads((tmp_path / "fashion-mnist-80" / "nets" / "us-n5-seed0.evaluations.json")
                             .read_text())["evaluations"]
    assert evaluation["settings"]["calibrate_samples"] == 128  # BN post-statistics, as for Table 1's US-Net
    other_images = smoke_run("budgets", tmp_path, "--budgets", "fashion-mnist", "digits", "--methods", "inet-0.25")
    assert other_images.returncode != 0 and "Traceback" not in other_images.stderr
    refusal = other_images.stderr.strip().splitlines()[-1]
    assert refusal.startswith("the compared runs differ in more than the method: ")
    assert "data" in refusal.split(": ")[1].split(", ")


@pytest.mark.slow
def test_kept_evaluations_stand_in_for_networks_that_are_gone(tmp_path):
    """nets/<run>.evaluations.json is committed where the networks are not: a table is rebuilt
    from it without training again, an evaluation of a network that changed is computed again,
    and one that was never kept is a clear error until --recompute trains the network again."""
    first = run_script("table2", tmp_path)["errors"]
    kept = tmp_path / "nets" / "us-random-seed0.evaluations.json"
    evaluations = json.loads(kept.read_text())
    (entry,) = evaluations["evaluations"]
    assert entry["settings"]["widths"] == [0.25, 0.5, 0.75, 1.0] and len(entry["network_sha256"]) == 64
    entry["rows"][0]["top1"] = 58.0  # read back, not computed: it shows in the table
    kept.write_text(json.dumps(evaluations))
    assert run_script("table2", tmp_path)["errors"]["random"]["0.25"] == [42.0]
    entry["network_sha256"] = "0" * 64  # kept for another network: computed again
    kept.write_text(json.dumps(evaluations))
    assert run_script("table2", tmp_path)["errors"] == first
    for network in (tmp_path / "nets").glob("*.safetensors"):
        network.unlink()
    assert run_script("table2", tmp_path)["errors"] == first  # from the kept evaluations alone
    assert not list((tmp_path / "nets").glob("*.safetensors"))  # nothing trained again
    evaluations = json.loads(kept.read_text())
    evaluations["evaluations"][0]["settings"]["calibrate_samples"] = 64  # none kept with the script's settings
    kept.write_text(json.dumps(evaluations))
    failed = smoke_run("table2", tmp_path)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == (
        f"us-random-seed0: {tmp_path / 'nets' / 'us-random-seed0.safetensors'} is gone and "
        "us-random-seed0.evaluations.json keeps no evaluation with these settings; pass --recompute "
        "to train it again")
    assert run_script("table2", tmp_path, "--recompute")["errors"] == first  # the same seed trains the same network
    assert (tmp_path / "nets" / "us-random-seed0.safetensors").is_file()


@pytest.mark.slow
def test_super_resolution_script_trains_every_method(out):
    result = subprocess.run([sys.executable, str(PAPER / "super_resolution.py"), "--smoke", "--out", str(out)],
                            capture_output=True, text=True, cwd=PAPER, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads((out / "super_resolution.json").read_text())
    assert len(payload["results"]) == 5
    for loss in ("L1", "L2"):
        us = payload["results"][f"US-WDSR, {loss} distillation"]["rows"]
        assert [r["width"] for r in us] == [0.5, 0.625, 0.75, 0.875, 1.0]
        assert us[0]["multiply_adds"] < us[-1]["multiply_adds"]  # the weight-normalised network slims
    assert [r["width"] for r in payload["results"]["WDSR 0.5x (individual)"]["rows"]] == [0.5]
    assert (out / "super_resolution.png").is_file()


@pytest.mark.slow
def test_search_script_compares_searched_and_uniform_widths(out):
    payload = run_script("search", out, result="search-us")
    assert set(payload["accuracy"]) == {"greedy", "evolution", "uniform"}
    costs = payload["multiply_adds"]
    assert all(costs[m]["80%"][0] > 0 for m in costs) and (out / "search-us.png").is_file()


@pytest.mark.slow
def test_vit_script_compares_a_vit_us_net_with_individual_vits(out):
    payload = run_script("vit", out)
    assert len(payload["markdown"].splitlines()) == 2 + 4  # the four individual widths
    assert set(payload["individual_error"]) == {"1.0", "0.75", "0.5", "0.25"}
    assert set(payload["us_net_error"]) == set(payload["us_net_60_epochs_error"]) == set(payload["multiply_adds"])
    madds = [payload["multiply_adds"][w] for w in ("0.25", "0.5", "0.75", "1.0")]
    assert madds == sorted(madds) and madds[0] < 0.1 * madds[-1]  # heads and channels shrink
    records = [json.loads(p.read_text()) for p in (out / "nets").glob("vit-*-seed0.json")]
    assert {r["model"][0] for r in records} == {"vit_tiny_patch16_224"} and len(records) == 6
    assert {r["config"]["opt"] for r in records} == {"adamw"}
    assert (out / "vit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_figure5_trains_a_us_net_and_i_nets_with_ppo(out):
    payload = run_script("figure5", out)
    assert set(payload["curves"]) == {"US-Net", "I-Net"}
    for label in ("US-Net", "I-Net"):  # every width evaluated at every checkpoint (3 updates at smoke size)
        assert set(payload["curves"][label]) == {"1", "0.75", "0.5", "0.25"}
        assert all(len(seed) == 3 for seed in payload["curves"][label].values() for seed in [seed[0]])
    assert len(payload["markdown"].splitlines()) == 6
    for label in ("US-Net", "I-Net"):  # one gain per width and seed, beside the last quarter's mean
        assert {w: len(v) for w, v in payload["last_quarter_gain"][label].items()} == {
            w: 1 for w in ("1", "0.75", "0.5", "0.25")}
    assert (out / "figure5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((out / "rl").glob("*.checkpoint.pt"))  # finished runs leave no checkpoint


def test_an_interrupted_ppo_run_resumes_to_the_same_network(tmp_path, monkeypatch):
    """Stopped after its second update's checkpoint, a run resumes there and ends where an
    uninterrupted run ends: the same curves, episodes and weights."""
    monkeypatch.syspath_prepend(str(PAPER))
    import rl

    config = rl.PPOConfig(frames=3 * 4 * 8, envs=4, steps=8, eval_every=4 * 8, eval_episodes=2, eval_max_steps=20)
    method = rl.Method("us", None, (1.0, 0.25))
    whole = rl.train(method, config, 0, tmp_path / "whole.safetensors")

    roll_out, calls = rl._roll_out, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return roll_out(*args, **kwargs)

    monkeypatch.setattr(rl, "_roll_out", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rl.train(method, config, 0, tmp_path / "resumed.safetensors")
    on_disk = json.loads((tmp_path / "resumed.json").read_text())
    assert len(on_disk["curves"]) == 2 and (tmp_path / "resumed.checkpoint.pt").is_file()
    monkeypatch.setattr(rl, "_roll_out", roll_out)
    resumed = rl.train(method, config, 0, tmp_path / "resumed.safetensors")
    assert resumed["curves"] == whole["curves"] and resumed["train_returns"] == whole["train_returns"]
    a, b = load_file(tmp_path / "whole.safetensors"), load_file(tmp_path / "resumed.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "resumed.checkpoint.pt").exists()


def test_a_finished_ppo_run_whose_network_is_gone_is_read_from_its_record(tmp_path, monkeypatch):
    """Figure 5's records are committed and its networks are not: a finished run stands in by its
    record; an unfinished one (checkpoint beside it) or one with other settings does not."""
    monkeypatch.syspath_prepend(str(PAPER))
    import rl

    config = rl.PPOConfig(frames=2 * 4 * 8, envs=4, steps=8, eval_every=4 * 8, eval_episodes=2, eval_max_steps=20)
    path = tmp_path / "run.safetensors"
    record = rl.train(rl.Method("inet-1", (1.0,), (1.0,)), config, 0, path)
    assert rl.kept_record(path, config) is None  # the network is there: train() reads it
    path.unlink()
    assert rl.kept_record(path, config) == json.loads(json.dumps(record))
    assert rl.kept_record(path, dataclasses.replace(config, frames=3 * 4 * 8)) is None  # other settings
    assert rl.kept_record(path, dataclasses.replace(config, lr=1e-3)) is None
    record_file = path.with_suffix(".json")
    record_file.write_text(json.dumps({**record, "curves": record["curves"][:-1]}))
    assert rl.kept_record(path, config) is None  # short of the last update
    record_file.write_text(json.dumps(record))
    path.with_suffix(".checkpoint.pt").write_bytes(b"")
    assert rl.kept_record(path, config) is None  # interrupted: resume instead


def test_a_ppo_run_with_other_settings_stops_before_it_overwrites_a_record(tmp_path, monkeypatch):
    """Figure 5 at another budget in the same folder: one line naming the difference and the way
    out, and the finished run's record (its only copy once the network is gone) untouched."""
    monkeypatch.syspath_prepend(str(PAPER))
    import rl

    config = rl.PPOConfig(frames=2 * 4 * 8, envs=4, steps=8, eval_every=4 * 8, eval_episodes=2, eval_max_steps=20)
    path = tmp_path / "run.safetensors"
    rl.train(rl.Method("inet-1", (1.0,), (1.0,)), config, 0, path)
    path.unlink()
    record = path.with_suffix(".json").read_text()
    longer = dataclasses.replace(config, frames=4 * 4 * 8)
    with pytest.raises(SystemExit, match=r"run\.json records a run with other settings \(frames 64 -> 128\); .*--out"):
        rl.train(rl.Method("inet-1", (1.0,), (1.0,)), longer, 0, path)
    assert path.with_suffix(".json").read_text() == record and not path.exists()
    rl.check_recorded_settings(path, config)  # its own settings: nothing to say


def test_an_interrupted_run_stops_the_queue_of_parallel_training(tmp_path, monkeypatch, capsys):
    """kill -INT (or Ctrl-C) stops a run with a checkpoint; the pool's workers must not go on to
    start the runs still queued."""
    sys.path.insert(0, str(PAPER))
    import common
    from usconvert.errors import TrainingInterrupted

    started = tmp_path / "started"
    started.mkdir()

    def train_one(item, out, setting, smoke, threads):  # forked into the workers
        (started / item.name).touch()
        if item.method == "inet-1":
            raise TrainingInterrupted("stopped at epoch 1, step 3")
        time.sleep(1)
        return {}

    monkeypatch.setattr(common, "_train_one", train_one)
    items = [common.run(m, 0) for m in ("inet-1", "inet-0.75", "inet-0.5", "inet-0.25", "snet")]
    with pytest.raises(SystemExit) as stopped:
        common.train_all(items, tmp_path, common.Setting(), jobs=2, smoke=True)
    names = {path.name for path in started.iterdir()}
    assert "inet-1-seed0" in names and len(names) <= 2, names  # at most the run beside it had begun
    # one line and Ctrl-C's exit status, as usconvert train gives, not a traceback
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "interrupted: stopped at epoch 1, step 3\n"


def test_curves_average_the_finished_runs_of_a_method_only(tmp_path):
    """A log kept of an earlier training (``us-seed0.first-training.log.jsonl``) and the log of a run
    without a record (unfinished) are not among a method's seeds."""
    nets = tmp_path / "nets"
    nets.mkdir()

    def write_run(name: str, top1: float, finished: bool = True) -> None:
        epochs = [{"val_top1_max": top1, "val_top1_min": top1 - 1, "loss_largest": 0.5}] * 2
        (nets / f"{name}.log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
        if finished:
            (nets / f"{name}.json").write_text("{}")

    write_run("us-seed0", 80.0)
    write_run("us-seed1", 90.0)
    write_run("us-seed0.first-training", 10.0)  # kept from an earlier training of the same run
    write_run("us-seed2", 20.0, finished=False)
    process = subprocess.run([sys.executable, str(PAPER / "curves.py"), "--out", str(tmp_path)],
                             capture_output=True, text=True, cwd=PAPER, timeout=300)
    assert process.returncode == 0, process.stderr[-2000:]
    curves = json.loads((tmp_path / "curves.json").read_text())["curves"]
    assert set(curves) == {"us"} and curves["us"]["seeds"] == [2]
    assert curves["us"]["val_top1_max"] == [85.0, 85.0] and curves["us"]["val_top1_min"] == [84.0, 84.0]
    assert (tmp_path / "curves.png").is_file()


def test_figure10_compares_a_slimmed_stage_with_uniform_at_the_same_multiply_adds(monkeypatch):
    """The paper's reading of Figure 10: accuracy under the same FLOPs, not at the same global
    width; uniform's spectrum is interpolated, and points beyond it are left out."""
    monkeypatch.syspath_prepend(str(PAPER))
    import figure10

    def spectrum(name: str, points: list[tuple[int, float]]) -> dict:  # at global widths 0.5 and 1.0
        rows = [{"width": r, "multiply_adds": m, "top1": t} for r, (m, t) in zip((0.5, 1.0), points)]
        return {"name": name, "rows": rows}

    uniform, slimmed = spectrum("uniform", [(100, 80.0), (200, 90.0)]), spectrum("slim", [(50, 70.0), (150, 86.0)])
    summary = figure10.against_uniform([uniform, slimmed])
    assert summary["slim"]["top1_minus_uniform_at_same_multiply_adds"] == pytest.approx(1.0)  # 86 against 85
    assert summary["slim"]["multiply_adds_of_uniform"] == pytest.approx(0.625)  # 0.5 and 0.75
    assert (summary["slim"]["mean_top1"], summary["slim"]["min_top1"]) == (78.0, 70.0)
    assert summary["uniform"]["top1_minus_uniform_at_same_multiply_adds"] == 0.0


def test_a_summary_over_seeds_gives_each_seeds_mean_over_the_widths_compared(monkeypatch):
    """The spread between trainings that a figure's comparison must exceed: the std over seeds
    of each seed's mean top-1 over the widths summarized, not the std at one width."""
    monkeypatch.syspath_prepend(str(PAPER))
    import common

    rows = [{"width": w, "top1": sum(seeds) / 2, "top1_per_seed": seeds}
            for w, seeds in ((0.25, [70.0, 80.0]), (0.5, [84.0, 80.0]), (1.0, [90.0, 88.0]))]
    summary = common.summarize([{"name": "us", "rows": rows}], from_width=0.5)["us"]
    assert summary["mean_top1_per_seed"] == pytest.approx([87.0, 84.0])  # 0.25x left out
    assert summary["mean_top1_std"] == pytest.approx(2.1213, abs=1e-4)  # stdev(87, 84)
    assert summary["mean_top1"] == pytest.approx(85.5)
    one_seed = [{**r, "top1_per_seed": r["top1_per_seed"][:1]} for r in rows]
    assert "mean_top1_std" not in common.summarize([{"name": "us", "rows": one_seed}])["us"]


def test_every_data_setting_and_method_makes_a_valid_training_configuration(monkeypatch):
    """A budget is a dict of TrainConfig overrides that only a run (minutes to hours in) would
    otherwise check: a misspelt or invalid setting (the GPU budget of gpu_table1.sh, a method's
    learning rate) fails here instead, at no training cost."""
    monkeypatch.syspath_prepend(str(PAPER))
    import common
    from usconvert.train.config import make_config

    for name, data in common.DATA.items():
        for method, settings in common.METHODS.items():  # less what _train_one takes out before make_config
            overrides = {k: v for k, v in settings.items() if k not in ("model", "start", *common.CONVERT_SETTINGS)}
            config = make_config(data.recipe, seed=0, **common.settings_of(overrides, common.Setting(name), False))
            assert config.epochs == overrides.get("epochs", data.budget["epochs"]), (name, method)
    full = make_config(common.DATA["fashion-mnist-full"].recipe,
                       **common.settings_of({}, common.Setting("fashion-mnist-full"), False))
    assert (full.batch_size, full.lr, full.sched) == (1024, 0.5, "linear")  # the paper's batch and rate
    # a learning rate relative to the data's: the recipe's (Fashion-MNIST on CPUs), the budget's (GPU)
    relative = {"widths_per_step": 5, "lr_scale": 0.8}
    assert common.settings_of(relative, common.Setting("fashion-mnist"), False)["lr"] == 0.04
    assert common.settings_of(relative, common.Setting("fashion-mnist-full"), False)["lr"] == 0.4
    assert "lr_scale" not in common.settings_of(relative, common.Setting("digits"), True)  # smoke runs too


def test_figure5_averages_each_quarter_of_a_run_and_signs_the_differences(monkeypatch):
    monkeypatch.syspath_prepend(str(PAPER))
    import figure5

    points = [(frames, float(frames)) for frames in range(1, 9)]  # quarters (0, 2], (2, 4], (4, 6], (6, 8]
    assert [figure5._quarter(points, q) for q in (1, 2, 3, 4)] == [1.5, 3.5, 5.5, 7.5]
    final = {"US-Net": {"1": [9.0, 4.0]}, "I-Net": {"1": [6.5, 5.25]}}
    assert figure5._per_seed(final, "1") == "+2.5 / −1.2"  # US-Net minus I-Net, seed by seed


def test_figure5_draws_the_mean_over_seeds_with_a_band_of_their_spread(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PAPER))
    import figure5

    drawn = []
    monkeypatch.setattr(figure5, "save_figure", lambda figure, path: drawn.append(figure))
    two_seeds = [[(100_000, 2.0), (200_000, 6.0)], [(100_000, 4.0), (200_000, 10.0)]]
    one_seed = [[(100_000, 3.0), (200_000, 5.0)]]
    figure5._plot({"I-Net": {"1": one_seed}, "US-Net": {"1": two_seeds}}, tmp_path / "f.png", "t")
    inet, us = drawn[0].axes
    assert list(us.lines[0].get_ydata()) == [3.0, 8.0]  # the mean over seeds
    band, = us.collections
    low, high = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
    assert (low, high) == pytest.approx((3.0 - 2 ** 0.5, 8.0 + 8 ** 0.5))  # mean ± stdev of each point
    assert not inet.collections  # one seed: no spread to draw
