"""Checks the instance's user data as Terraform rendered it (``terraform console`` output of
main.tf's templatefile call): a #cloud-config document within EC2's 16 KiB, installing Docker and
the compose plugin, carrying qsf_compose.py unchanged, ending by starting the stack; writes the
document for cloud-init's schema check.

usage: python3 .ci/user_data.py CONSOLE_OUTPUT QSF_COMPOSE_PY OUT_YAML
"""

import sys

import yaml


def main(console: str, script: str, out: str) -> None:
    lines = open(console, encoding="utf-8").read().splitlines()
    if not lines or lines[0] != "<<EOT" or lines[-1] != "EOT":
        sys.exit(f"user data: terraform console did not print a rendered document: {lines[:3]}")
    text = "\n".join(lines[1:-1]) + "\n"
    doc = yaml.safe_load(text)
    problems = []
    if not text.startswith("#cloud-config\n"):
        problems.append("it does not start with #cloud-config")
    if len(text.encode()) > 16384:
        problems.append(f"{len(text.encode())} bytes: EC2 takes 16 KiB")
    if not {"docker.io", "docker-compose-v2"} <= set(doc.get("packages", [])):
        problems.append("Docker or the compose plugin is not installed")
    files = {f["path"]: f["content"] for f in doc.get("write_files", [])}
    if files.get("/usr/local/bin/qsf-compose") != open(script, encoding="utf-8").read():
        problems.append("/usr/local/bin/qsf-compose differs from qsf_compose.py")
    if doc.get("runcmd", [[]])[-1][:2] != ["/usr/local/bin/qsf-compose", "up"]:
        problems.append("it does not end by starting the stack")
    if problems:
        sys.exit("user data: " + "; ".join(problems))
    open(out, "w", encoding="utf-8").write(text)
    print(f"user data: {len(text.encode()):,} bytes, #cloud-config, qsf-compose as in the checkout")


if __name__ == "__main__":
    main(*sys.argv[1:])
