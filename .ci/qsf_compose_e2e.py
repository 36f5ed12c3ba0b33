"""qsf-compose end to end, as on the instance but for AWS itself: the stack's settings in a real
SSM-speaking server (moto in server mode) as SecureString parameters, infra/terraform/
qsf_compose.py run with its config file pointing there, exec'ing the real docker CLI with the
compose v2 plugin (``DOCKER_CONFIG``), here ``docker compose config``: every setting reaches the
services as the compose file routes it, the password unchanged whatever it holds.

usage: python .ci/qsf_compose_e2e.py   (with moto[server] and boto3; DOCKER_CONFIG set)
"""

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[1]
PG_PASSWORD = "p@ss:w/rd?#1 $HOME 'q' \"d\" %41"
SETTINGS = {"QSF_PG_PASSWORD": PG_PASSWORD, "QSF_DASHBOARD_PASSWORD": "dash board", "QSF_SYMBOLS": "solusdt,ethusdt",
            "QSF_TELEGRAM_TOKEN": "123:ci-token", "QSF_TELEGRAM_CHAT_ID": "42"}


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        aws = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "ci", "AWS_SECRET_ACCESS_KEY": "ci",
               "AWS_EC2_METADATA_DISABLED": "true"}
        ssm = boto3.client("ssm", region_name="eu-central-1", endpoint_url=aws["AWS_ENDPOINT_URL"],
                           aws_access_key_id="ci", aws_secret_access_key="ci")
        for key, value in SETTINGS.items():
            ssm.put_parameter(Name=f"/qsf/{key}", Value=value, Type="SecureString")
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "qsf-compose.env"
            config.write_text(f"QSF_AWS_REGION=eu-central-1\nQSF_SSM_PREFIX=/qsf\nQSF_PROJECT_DIR={ROOT}\n")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("QSF_", "AWS_"))}
            r = subprocess.run([sys.executable, str(ROOT / "infra/terraform/qsf_compose.py"), "config", "--format", "json"],
                               capture_output=True, text=True, env={**env, **aws, "QSF_COMPOSE_CONFIG": str(config)},
                               timeout=300)
    finally:
        server.stop()
    if r.returncode != 0:
        sys.exit(f"qsf-compose config failed ({r.returncode}): {r.stderr}")
    services = json.loads(r.stdout)["services"]
    escaped = PG_PASSWORD.replace("$", "$$")  # compose writes a literal $ as $$ in its output
    got = {"timescaledb": services["timescaledb"]["environment"]["POSTGRES_PASSWORD"],
           "processor": services["processor"]["environment"]["PGPASSWORD"],
           "dashboard": services["dashboard"]["environment"]["PGPASSWORD"]}
    wrong = [name for name, value in got.items() if value != escaped]
    if wrong or services["ingest"]["environment"]["QSF_SYMBOLS"] != "solusdt,ethusdt" \
            or services["processor"]["environment"]["QSF_TELEGRAM_TOKEN"] != "123:ci-token":
        sys.exit(f"qsf-compose: settings did not reach the services as routed: {wrong or got}")
    if any(PG_PASSWORD in line for line in r.stderr.splitlines()):
        sys.exit("qsf-compose printed the password")
    print("qsf-compose: SSM settings -> docker compose (v2): every service got its settings unchanged")


if __name__ == "__main__":
    main()
