"""A small client of TorchServe's inference API. The key is read from TorchServe's key file (or a secret
mounted as a file), never taken from the command line, and never printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import read_json


def read_key(token_file: Path, api: str = "inference") -> str:
    """The `api` key (inference, management or API) from TorchServe's key_file.json."""
    try:
        return read_json(token_file)[api]["key"]
    except FileNotFoundError:
        raise MlkubeError(
            f"no token file at {token_file}",
            "start the server with `mlkube serve RUN`, or point at the key_file.json that TorchServe wrote",
        ) from None
    except ValueError:  # mlkube makes the file empty before TorchServe writes its keys into it
        raise MlkubeError(
            f"the token file {token_file} holds no keys yet",
            "wait until `mlkube serve RUN` says the server is ready, then try again",
        ) from None


def auth_header(token_file: Path | None, api: str = "inference") -> dict[str, str]:
    """The Authorization header for `api`; none when the server runs without token authorization."""
    return {} if token_file is None else {"Authorization": f"Bearer {read_key(token_file, api)}"}


class Client:
    """Predictions from one TorchServe over one keep-alive HTTP session."""

    def __init__(self, url: str, token_file: Path | None = None, timeout: float = 30):
        import requests

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"Content-Type": "application/json", **auth_header(token_file)})

    def predict(self, model: str, payload: dict[str, Any] | bytes) -> dict[str, Any]:
        """POST `payload` (a request object, or its JSON bytes) to the model; MlkubeError with the server's
        message on any status but 200."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        answer = self.session.post(f"{self.url}/predictions/{model}", data=body, timeout=self.timeout)
        if answer.status_code != 200:
            raise MlkubeError(
                f"{model}: HTTP {answer.status_code}: {error_message(answer)}",
                "the message names the problem; request schemas are in docs/serving.md",
            )
        return answer.json()


def unix_request(
    socket_path: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """One HTTP request over the Unix socket `socket_path` (TorchServe's management API): the status and the
    parsed JSON body (the text where it is not JSON). OSError when nothing listens there."""
    import http.client
    import socket
    from urllib.parse import urlencode

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(socket_path)

    connection = UnixConnection("localhost", timeout=timeout)
    try:
        connection.request(method, path + (f"?{urlencode(params)}" if params else ""), headers=headers or {})
        answer = connection.getresponse()
        text = answer.read().decode(errors="replace")
    finally:
        connection.close()
    try:
        return answer.status, json.loads(text)
    except ValueError:
        return answer.status, text


def error_message(answer: Any) -> str:
    """The message of an error answer: the handler's `error`, or TorchServe's own `message`."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text.strip()[:500]
    return str(body.get("error") or body.get("message") or body) if isinstance(body, dict) else str(body)
