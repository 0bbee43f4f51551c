"""Secrets never written: tokens from the environment, the HF token file, a `*token*` override or YAML key.

More fast cases, on the paths where a token used to reach a file: tests/test_no_secret_on_disk.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from arpo_train_sft import secrets
from arpo_train_sft.secrets import MASK, is_secret_key, move_to_env, redact, secret_values

from .conftest import run_env

ENV_TOKEN = "hf_fakeEnvToken0123456789abcdef"
WANDB_KEY = "wandbfakekey0123456789abcdef0123456789"
FILE_TOKEN = "hf_fakeFileToken0123456789abcdef"
OVERRIDE_TOKEN = "hf_fakeOverrideToken0123456789ab"
YAML_TOKEN = "ms_fakeYamlToken0123456789abcdef"
YAML_HF_TOKEN = "hf_fakeYamlHfHubToken0123456789a"
OM_OVERRIDE_TOKEN = "om_fakeOverrideToken0123456789ab"
FAKES = (ENV_TOKEN, WANDB_KEY, FILE_TOKEN, OVERRIDE_TOKEN, YAML_TOKEN, YAML_HF_TOKEN, OM_OVERRIDE_TOKEN)


@pytest.fixture(autouse=True)
def no_remembered_configs(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(secrets, "_from_configs", set())


@pytest.mark.parametrize(
    "key", ["hub_token", "hf_hub_token", "ms_hub_token", "token", "wandb_api_key", "db_password"]
)
def test_credential_keys_are_secret(key: str):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["max_new_tokens", "add_special_tokens", "new_special_tokens", "cutoff_len"])
def test_token_count_keys_are_not_secret(key: str):
    assert not is_secret_key(key)


def test_values_come_from_env_the_token_file_and_configs(tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text(FILE_TOKEN + "\n")
    env = {
        "HF_TOKEN": ENV_TOKEN,
        "WANDB_API_KEY": WANDB_KEY,
        "HF_TOKEN_PATH": str(token_file),
        "HF_HUB_DISABLE_TOKEN": "1",
        "PATH": "/usr/bin",
    }
    secrets.remember({"hub_token": OVERRIDE_TOKEN, "max_new_tokens": "4096"})
    assert secret_values(env) == {ENV_TOKEN, WANDB_KEY, FILE_TOKEN, OVERRIDE_TOKEN}


def test_redact_masks_every_value_and_leaves_the_rest():
    text = f"hub_token={OVERRIDE_TOKEN} key {WANDB_KEY}x max_steps=10"
    assert redact(text, {OVERRIDE_TOKEN, WANDB_KEY}) == f"hub_token={MASK} key {MASK}x max_steps=10"


def test_a_token_of_another_type_is_masked_element_by_element():
    secrets.remember(
        {
            "hf_hub_token": [ENV_TOKEN, {"nested": WANDB_KEY}],
            "ms_hub_token": 918273645546372819,
            "om_hub_token": True,
            "max_new_tokens": 123456789,
        }
    )
    shown = f"{[ENV_TOKEN, {'nested': WANDB_KEY}]} {918273645546372819} {json.dumps([ENV_TOKEN])} 123456789"
    assert redact(shown, secret_values({})) == "['***', {'nested': '***'}] *** [\"***\"] 123456789"


def test_a_token_with_quotes_is_masked_as_json_and_repr_write_it():
    token = 'hf_fake"quoted\\token0123'
    secrets.remember({"hf_hub_token": token})
    for shown in (token, json.dumps(token), repr(token)):
        assert token.split('"')[1] not in redact(shown, secret_values({})), shown


def test_move_to_env_takes_tokens_off_the_argv():
    values = {"hub_token": OVERRIDE_TOKEN, "ms_hub_token": YAML_TOKEN, "max_steps": 2, "hf_hub_token": None}
    argv, env = move_to_env(values, (f"hub_token={OVERRIDE_TOKEN}", "max_steps=2"))
    assert argv == ("max_steps=2", "hub_token=null", "ms_hub_token=null")
    assert env == {"HF_TOKEN": OVERRIDE_TOKEN, "MODELSCOPE_API_TOKEN": YAML_TOKEN}
    assert OVERRIDE_TOKEN in secret_values({})  # remembered: later log lines are masked too


def leaks(root: Path) -> list[str]:
    """Every file under root (binary ones too) holding a fake token's bytes, as `file: token`."""
    return [leak for file in root.rglob("*") if file.is_file() for leak in leaks_in(file)]


def leaks_in(file: Path) -> list[str]:
    data = file.read_bytes()
    return [f"{file}: {fake}" for fake in FAKES if fake.encode() in data]


@pytest.mark.integration
def test_train_export_verify_write_no_token(checkout: Path, tmp_path: Path):
    token_file = tmp_path / "hf" / "token"
    token_file.parent.mkdir()
    token_file.write_text(FILE_TOKEN)
    config = checkout / "yaml" / "secret_demo.yaml"
    demo = (checkout / "yaml" / "demo_cpu.yaml").read_text()
    config.write_text(demo + f"ms_hub_token: {YAML_TOKEN}\nhf_hub_token: {YAML_HF_TOKEN}\n")
    output_dir, cache = tmp_path / "run", tmp_path / "cache"
    env = run_env(
        HF_TOKEN=ENV_TOKEN, WANDB_API_KEY=WANDB_KEY, HF_TOKEN_PATH=str(token_file), ARPO_SFT_CACHE=str(cache)
    )  # a cache of its own: the tokenized build runs in this test
    cli = [sys.executable, "-m", "arpo_train_sft.cli"]

    def step(*argv: str) -> str:
        result = subprocess.run(
            [*cli, *argv], cwd=checkout, env=env, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    said = step(
        "train",
        str(config),
        "max_steps=2",
        "save_steps=2",
        "logging_steps=1",
        "cutoff_len=256",
        f"output_dir={output_dir}",
        f"hub_token={OVERRIDE_TOKEN}",
        f"om_hub_token={OM_OVERRIDE_TOKEN}",
    )
    assert (output_dir / "checkpoint-2" / "training_args.bin").is_file()
    said += step("export", str(output_dir / "checkpoint-2"), str(tmp_path / "exported"), "--dtype", "fp32")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"question": "What is 2+2?", "answer": "4"}) + "\n")
    said += step(
        "verify",
        str(tmp_path / "exported"),
        "--prompts",
        str(prompts),
        "--max-new-tokens",
        "8",
        "--max-total-tokens",
        "16",
        "--report",
        str(tmp_path / "reports" / "verify.json"),
    )
    assert (tmp_path / "reports" / "verify.json").is_file() and (
        tmp_path / "exported" / "README.md"
    ).is_file()
    assert "hub_token=null" in (output_dir / "training.log").read_text()
    assert "tokenized dataset: built " in said and any(cache.rglob("manifest.json"))
    crashes = (Path.home() / ".cache" / "arpo-sft", Path(tempfile.gettempdir()))
    written = (output_dir, tmp_path / "exported", tmp_path / "reports", checkout / "models", cache)
    assert [leak for root in written for leak in leaks(root)] == []
    assert [leak for root in crashes for crash in root.glob("crash-*") for leak in leaks_in(crash)] == []
    assert not [fake for fake in FAKES if fake in said]
