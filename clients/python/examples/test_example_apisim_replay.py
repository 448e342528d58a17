import json
import urllib.request
from pathlib import Path

RECORDING = Path(__file__).parent / "recordings" / "models.sql"


def test_lists_models_from_the_recording(apisim_replay):
    server = apisim_replay(RECORDING)  # apisim replay --db models.sql on a free port
    with urllib.request.urlopen(server.url + "/v1/models") as resp:
        models = [m["id"] for m in json.load(resp)["data"]]
    assert models == ["claude-sonnet-4-5"]
    assert server.request_count("GET", "/v1/models") == 1
