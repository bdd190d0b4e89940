"""`helm test`: every model the release serves answers its example request, sent through the Service with the
key.

All three come from the run's serving folder on the runs volume: `server.json` (the served models),
`key_file.json` (the inference key TorchServe made when it started) and `examples/<model>.json` (a valid
request, written by `mlkube serve`). Environment: SERVING (that folder) and URL (the Service's inference
address). Exits non-zero, naming the problem, on the first refusal.
"""

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from mlkube.serving.client import Client
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import read_json


def main() -> None:
    folder = Path(os.environ["SERVING"])
    for name in ("server.json", "key_file.json"):
        if not (folder / name).is_file():
            sys.exit(f"no {name} in {folder}: TorchServe does not serve this run (see the serve pod's log)")
    expires = datetime.fromisoformat(read_json(folder / "key_file.json")["inference"]["expiration time"])
    if expires <= datetime.now(timezone.utc):
        sys.exit(
            f"the inference key expired at {expires:%Y-%m-%d %H:%M} UTC; fix: restart the serve Deployment "
            "for fresh keys, or renew the key (docs/cluster.md)"
        )
    client = Client(os.environ["URL"], folder / "key_file.json", timeout=60)
    for model in read_json(folder / "server.json")["models"]:
        try:
            answer = client.predict(model, (folder / "examples" / f"{model}.json").read_bytes())
        except MlkubeError as err:
            sys.exit(str(err))
        print(f"{model}: {json.dumps(answer)}")


main()
