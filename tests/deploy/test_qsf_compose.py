"""qsf-compose, the instance's ``docker compose`` with the stack's settings from SSM Parameter
Store (infra/terraform/qsf_compose.py): read from a real SSM-speaking server (moto in server
mode) with decryption and paging, exactly the parameters under the prefix, values unchanged
whatever they hold; a bad name, a nested one or a missing password is one line naming the
parameter (never a value), exit 2, before docker is run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qsframework.stack.services import free_port

from ..fakes.aws import aws_server
from .compose import ROOT

SCRIPT = ROOT / "infra" / "terraform" / "qsf_compose.py"
_spec = importlib.util.spec_from_file_location("qsf_compose", SCRIPT)
assert _spec is not None and _spec.loader is not None
qsf_compose = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(qsf_compose)
SECRET = "qsf-test-secret-key"


@pytest.fixture(scope="module")
def ssm_env() -> dict[str, str]:
    """A moto server speaking SSM on a free port; the AWS environment that reaches it."""
    with aws_server(SECRET) as env:
        yield env


def _put(env: dict[str, str], params: dict[str, str]) -> None:
    ssm = boto3.client("ssm", region_name="eu-central-1", endpoint_url=env["AWS_ENDPOINT_URL"],
                       aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=SECRET)
    for name, value in params.items():
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)


def _run(env: dict[str, str], config: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env, "QSF_COMPOSE_CONFIG": config})


def test_every_parameter_under_the_prefix_decrypted_and_paged(ssm_env, monkeypatch):
    prefix = f"/qsf-{uuid.uuid4().hex[:8]}"
    wanted = {"QSF_PG_PASSWORD": "p@ss:w/rd?#1 $HOME 'q' \"d\" %41 \\n", "QSF_DASHBOARD_PASSWORD": "dash",
              **{f"QSF_EXTRA_{i}": f"value {i}" for i in range(13)}}  # more than one page (10)
    _put(ssm_env, {f"{prefix}/{key}": value for key, value in wanted.items()})
    _put(ssm_env, {f"{prefix}/deeper/QSF_NOT_MINE": "x", f"{prefix}-other/QSF_PG_PASSWORD": "other"})
    for key, value in ssm_env.items():
        monkeypatch.setenv(key, value)
    fetched = qsf_compose.fetch("eu-central-1", prefix)
    assert len(fetched) == len(wanted)
    assert qsf_compose.settings(fetched, prefix) == wanted
    assert qsf_compose.settings(fetched, prefix + "/") == wanted


_NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True)


@given(st.dictionaries(_NAMES, st.text(), max_size=8))
def test_values_reach_the_environment_unchanged(extra):
    pairs = {"QSF_PG_PASSWORD": "a", "QSF_DASHBOARD_PASSWORD": "b", **extra}
    pairs = {key: value or "set" for key, value in pairs.items()}
    assert qsf_compose.settings([(f"/qsf/{k}", v) for k, v in pairs.items()], "/qsf") == pairs


@pytest.mark.parametrize("name, message", [
    ("/qsf/qsf-lower", "parameter /qsf/qsf-lower: 'qsf-lower' is not an environment variable name (A-Z, 0-9, _)"),
    ("/qsf/A/B", "parameter /qsf/A/B: 'A/B' is not an environment variable name (A-Z, 0-9, _)"),
    ("/other/A", "parameter /other/A is not under /qsf/"),
])
def test_a_name_that_is_no_variable_is_refused(name, message):
    with pytest.raises(qsf_compose.SettingsError) as err:
        qsf_compose.settings([(name, "secret-value")], "/qsf")
    assert str(err.value) == message


def test_missing_settings_are_one_line_exit_2_before_docker(ssm_env, tmp_path):
    """Nothing to run docker with: what is missing, where, never a value."""
    prefix = f"/qsf-{uuid.uuid4().hex[:8]}"
    _put(ssm_env, {f"{prefix}/QSF_DASHBOARD_PASSWORD": "dash-secret"})
    config = tmp_path / "qsf-compose.env"
    config.write_text(f"# where the settings are\nQSF_AWS_REGION=eu-central-1\nQSF_SSM_PREFIX={prefix}\n"
                      f"QSF_PROJECT_DIR={tmp_path}\n")
    r = _run(ssm_env, str(config), "up", "-d")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"qsf-compose: missing in SSM Parameter Store: {prefix}/QSF_PG_PASSWORD (aws ssm put-parameter "
                        f"--type SecureString --name {prefix}/QSF_PG_PASSWORD --value ...)\n")
    r = _run(ssm_env, str(tmp_path / "absent.env"), "ps")
    assert (r.returncode, r.stderr) == (2, f"qsf-compose: {tmp_path / 'absent.env'}: No such file or directory\n")
    config.write_text("QSF_AWS_REGION=eu-central-1\n")
    r = _run(ssm_env, str(config), "ps")
    assert (r.returncode, r.stderr) == (2, f"qsf-compose: {config} has no QSF_SSM_PREFIX, QSF_PROJECT_DIR\n")


def test_no_ssm_endpoint_is_one_line_exit_2(tmp_path):
    port = free_port()  # nobody listens on it
    config = tmp_path / "qsf-compose.env"
    config.write_text(f"QSF_AWS_REGION=eu-central-1\nQSF_SSM_PREFIX=/qsf\nQSF_PROJECT_DIR={tmp_path}\n")
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "qsf-test",
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1"}
    r = _run(env, str(config), "ps")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == f'qsf-compose: Could not connect to the endpoint URL: "http://127.0.0.1:{port}/"\n'
