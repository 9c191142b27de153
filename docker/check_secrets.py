"""Refuse to start Airflow with a secret left as a placeholder, too short, or (the Fernet key) not a Fernet key.

compose's ``${VAR:?}`` only refuses an empty value; ``airflow-init`` runs this before migrating the database, so a
copied ``.env.example`` stops the deployment with a message that names the variable and says how to make a value.
"""

from __future__ import annotations

import os
import sys

SECRETS = {
    "AIRFLOW__API_AUTH__JWT_SECRET": "AIRFLOW_JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY": "AIRFLOW_API_SECRET_KEY",
}
MAKE_HEX = 'python3 -c "import secrets; print(secrets.token_hex(32))"'
MAKE_FERNET = 'python3 -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


def problems(environ: dict[str, str]) -> list[str]:
    found = []
    for variable, in_env_file in SECRETS.items():
        value = environ.get(variable, "")
        if "replace" in value.lower() or len(value) < 32:
            found.append(
                f"{in_env_file} in .env is a placeholder or shorter than 32 characters: make one with {MAKE_HEX}"
            )
    try:
        from cryptography.fernet import Fernet

        Fernet(environ.get("AIRFLOW__CORE__FERNET_KEY", "").encode())
    except Exception:  # any refusal: not 32 url-safe base64-encoded bytes
        found.append(f"AIRFLOW_FERNET_KEY in .env is not a Fernet key: make one with {MAKE_FERNET}")
    return found


if __name__ == "__main__":
    refused = problems(dict(os.environ))
    for line in refused:
        print(line, file=sys.stderr)
    sys.exit(1 if refused else 0)
