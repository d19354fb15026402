"""One convention across commands: ``--json`` prints JSON on stdout, ``-o`` writes files whose
suffix chooses the format, widths are numbers, the old spellings still work for a release, and
``--help``, ``--version`` and argument errors answer without importing torch."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
COMMANDS = ["demo", "convert", "inspect", "train", "calibrate", "spectrum", "profile", "export", "census"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["usconvert", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("conventions")
    result = run("convert", f"{DATA / 'tiny.py'}:tiny", "--input-size", "3,16,16", "-o", "tiny.safetensors",
                 cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "tiny.safetensors"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_documents_the_shared_options(command, tmp_path):
    text = run(command, "--help", cwd=tmp_path).stdout
    assert ("-o, --output" in text) == (command != "inspect")  # inspect writes nothing
    if command not in ("demo", "train", "calibrate"):  # they write files and print progress only
        assert "--json" in text and "Print the result as JSON on stdout" in " ".join(text.split())


def test_json_on_stdout_and_files_by_suffix_in_every_command_that_reports(tiny, tmp_path):
    spectrum = run("spectrum", str(tiny), "--data", "fake:32", "--widths", "1.0", "-o", "s.json", "-o", "s.csv",
                   "--json", cwd=tmp_path)
    assert spectrum.returncode == 0, spectrum.stderr
    printed = json.loads(spectrum.stdout)
    assert printed == json.loads((tmp_path / "s.json").read_text())
    assert printed["rows"][0]["width"] == 1.0 and printed["rows"][0]["configuration"] is None
    with open(tmp_path / "s.csv") as f:
        assert float(next(csv.DictReader(f))["width"]) == 1.0

    profile = run("profile", str(tiny), "--widths", "0.25,1.0", "--repeats", "3", "-b", "2", "-o", "p.json",
                  "-o", "p.csv", "--json", cwd=tmp_path)
    assert profile.returncode == 0, profile.stderr
    printed = json.loads(profile.stdout)
    assert printed == json.loads((tmp_path / "p.json").read_text())
    assert [r["width"] for r in printed["rows"]] == [0.25, 1.0]
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["width"]) for r in rows] == [0.25, 1.0] and "layers" not in rows[0]
    assert {"multiply_adds", "parameters", "latency_ms_batch_1", "latency_iqr_ms_batch_2"} <= set(rows[0])

    for command in (["inspect", str(tiny)], ["export", str(tiny), "--width", "1.0", "-o", "small.pt2"]):
        result = run(*command, "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        json.loads(result.stdout)  # nothing but JSON on stdout


def test_old_spellings_work_and_say_what_to_write(tiny, tmp_path):
    result = run("spectrum", str(tiny), "--data", "fake:32", "--widths", "1.0", "--json", "s.json", "--csv", "s.csv",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "s.json").read_text())["rows"][0]["width"] == 1.0
    assert (tmp_path / "s.csv").is_file()
    deprecations = [line for line in result.stderr.splitlines() if line.startswith("deprecated:")]
    assert deprecations == ["deprecated: usconvert spectrum --json s.json: write -o s.json (the suffix chooses the "
                            "format; --json now prints JSON on stdout); the old spelling goes in the next release",
                            "deprecated: usconvert spectrum --csv s.csv: write -o s.csv (the suffix chooses the "
                            "format; --json now prints JSON on stdout); the old spelling goes in the next release"]
    result = run("profile", str(tiny), "--widths", "1.0", "--repeats", "2", "--batch", "2", "--json", cwd=tmp_path)
    assert result.returncode == 0 and "write --batch-size 2" in result.stderr
    assert "latency_ms_batch_2" in json.loads(result.stdout)["rows"][0]


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["convert", "--help"],
                                  ["convert", "resnet18", "-o", "x.pt"], ["spectrum", "x.safetensors", "-o", "x.txt"],
                                  ["calibrate", "x.safetensors", "--mode", "fast", "-o", "y.safetensors"]])
def test_help_version_and_argument_errors_import_no_torch(args):
    probe = ("import sys\nfrom usconvert.cli import main\nsys.argv = ['usconvert', *sys.argv[1:]]\ntry:\n    main()\n"
             "except SystemExit as exit:\n    code = exit.code\n"
             "print('torch' in sys.modules, 'timm' in sys.modules, code)")
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
    imported_torch, imported_timm, code = result.stdout.split()[-3:]
    assert (imported_torch, imported_timm) == ("False", "False"), result.stderr
    assert code in ("0", "None") if args[-1] in ("--help", "--version") else code == "2"


def test_version():
    result = subprocess.run(["usconvert", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "usconvert 0.1.0"


def test_ctrl_c_while_the_command_line_is_still_being_imported_is_one_line():
    """The console script's entry point catches Ctrl-C before it imports the command line (an
    interrupt is raised here by the import machinery, at the moment the import starts)."""
    probe = ("import sys\n"
             "class Interrupt:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'usconvert.cli':\n"
             "            raise KeyboardInterrupt\n"
             "sys.meta_path.insert(0, Interrupt())\n"
             "from usconvert.console_script import main\n"
             "main()\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 130 and result.stderr == "interrupted\n", result.stderr
    from importlib.metadata import entry_points
    script, = [e for e in entry_points(group="console_scripts") if e.name == "usconvert"]
    assert script.value == "usconvert.console_script:main"
