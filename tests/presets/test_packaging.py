"""The wheel outside a checkout: build it, install it into a fresh venv, `arpo-sft init`, train the demo there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from .test_init import REPO, repo_shipped

pytestmark = pytest.mark.integration

# What the build reads. The wheel is built from a copy holding only these, so a stale build/ or downloaded data
# in the checkout cannot reach it; arpo_train_sft/presets' symlinks resolve inside the copy.
BUILD_INPUTS = {
    "pyproject.toml",
    "README.md",
    "arpo_train_sft",
    "yaml",
    "examples",
    "dataset_info",
    "sft_train.sh",
}
DATASET_INFO_INPUTS = {"dataset_info.json", "demo"}
STEPS = 3


def _build_inputs_only(directory: str, names: list[str]) -> set[str]:
    here = Path(directory)
    keep = {REPO: BUILD_INPUTS, REPO / "dataset_info": DATASET_INFO_INPUTS}.get(here)
    return {name for name in names if name == "__pycache__" or (keep is not None and name not in keep)}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """arpo-sft's wheel, built offline with the setuptools already installed."""
    root = tmp_path_factory.mktemp("build")
    shutil.copytree(REPO, root / "src", symlinks=True, ignore=_build_inputs_only)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(root / "dist"),
            str(root / "src"),
        ],
    )
    (found,) = (root / "dist").glob("arpo_train_sft-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the repo with only the wheel installed; the dependencies are borrowed (see below)."""
    env_dir = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    run([*pip, "install", "--no-deps", "--no-index", str(wheel)])
    # Installing torch, DeepSpeed and LLaMA-Factory again would take minutes and the network; a .pth line makes
    # this interpreter's site-packages visible after the venv's own, which holds arpo_train_sft. Written after
    # the install: before it, pip would find the editable arpo-train-sft there and try to uninstall it.
    own = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    )
    borrowed = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (own / "borrowed_dependencies.pth").write_text("".join(f"{path}\n" for path in borrowed))
    return env_dir


def outside_env(venv: Path) -> dict[str, str]:
    """The user's view: the venv's bin first on PATH, nothing pointing at the repo."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def demo(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """`arpo-sft init demo && cd demo && bash sft_train.sh yaml/demo_cpu.yaml`, shortened, in a scratch dir."""
    work = tmp_path_factory.mktemp("user")
    env = outside_env(venv)
    init = run(["arpo-sft", "init", "demo"], cwd=work, env=env)
    assert "next: cd demo && bash sft_train.sh yaml/demo_cpu.yaml" in init.stdout
    result = subprocess.run(
        ["bash", "sft_train.sh", "yaml/demo_cpu.yaml", f"max_steps={STEPS}", f"save_steps={STEPS}"],
        cwd=work / "demo",
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return result, work / "demo"


def test_wheel_carries_every_shipped_file_and_nothing_else(wheel: Path):
    expected = {f"arpo_train_sft/presets/{name}": name for name in repo_shipped()}
    with zipfile.ZipFile(wheel) as archive:
        data = {name for name in archive.namelist() if name.startswith("arpo_train_sft/presets/")}
        assert data - {"arpo_train_sft/presets/__init__.py", "arpo_train_sft/presets/init.py"} == set(
            expected
        )
        for member, name in expected.items():
            assert archive.read(member) == (REPO / name).read_bytes(), name


def test_installed_package_is_the_venvs_not_the_repos(venv: Path, tmp_path: Path):
    code = "import arpo_train_sft.presets as p; print(p.__file__); print(len(p.shipped_files()))"
    out = run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=outside_env(venv)).stdout.split()
    assert Path(out[0]).is_relative_to(venv), out[0]
    assert int(out[1]) == len(repo_shipped())


def test_demo_trains_in_an_init_directory(demo, venv: Path):
    result, demo_dir = demo
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "built the tiny demo model in models/arpo-sft-tiny-qwen2" in result.stdout
    output_dir = demo_dir / "checkpoints" / "demo-cpu"
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == STEPS
    assert (output_dir / "model.safetensors").is_file()
    assert (output_dir / f"checkpoint-{STEPS}" / f"global_step{STEPS}").is_dir()
    # The ranks ran on the venv's interpreter, so they imported the wheel's arpo_train_sft too.
    assert f"{venv / 'bin' / 'python'} -m torch.distributed.run" in (output_dir / "training.log").read_text()
