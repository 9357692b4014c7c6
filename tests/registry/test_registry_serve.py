"""``streamfeat serve`` records which model reads which features (issue #17) as the client
does: a request names its model (``model`` query parameter or ``X-Streamfeat-Model``), the
reads are counted in memory and sent at shutdown, a bad name is a 400."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from streamfeat.cli import main
from streamfeat.registry import SharedCatalog
from streamfeat.serving import IO_MODES, ServeConfig, build_app

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("io", IO_MODES)
def test_the_feature_server_counts_each_model_s_reads(
        tmp_path: Path, redis_url: str, unique_id: str, forget: Callable[[str], str],
        capsys: pytest.CaptureFixture[str], io: str) -> None:
    name = forget(f"{unique_id}-shop")
    path = tmp_path / "shop.yaml"
    path.write_text(f"name: {name}\nsource: {{topic: shop, key: user_id}}\nfeatures:\n"
                    "  - {name: visits, agg: count, windows: [1h, 1d]}\n"
                    "  - {name: spend, agg: sum, field: amount, windows: [1h]}\n")
    fraud, churn = f"fraud-{unique_id}", f"churn/{unique_id}:2"
    config = ServeConfig(topologies=(str(path),), redis=redis_url, io=io)
    with TestClient(build_app(config)) as http:
        for _ in range(4):
            got = http.post(f"/features/{name}?model={fraud}",
                            json={"entities": ["u1", "u2"], "features": ["visits"]})
            assert got.status_code == 200, got.text
        got = http.get(f"/features/{name}/u3?features=spend__1h",
                       headers={"X-Streamfeat-Model": churn})
        assert got.status_code == 200 and got.json()["entities"] == {"u3": {"spend__1h": None}}
        assert http.get(f"/features/{name}/u3").status_code == 200  # no model: not counted
        refused = http.get(f"/features/{name}/u3?model=bad%20name")
        assert refused.status_code == 400
        assert "is not a model name" in refused.json()["error"]
        with SharedCatalog(redis_url) as catalog:
            assert catalog.usage([name]) == []  # counted in memory while serving
    with SharedCatalog(redis_url) as catalog:  # sent when the server stopped
        reads = [(r.model, r.field, r.reads) for r in catalog.usage([name])]
    assert reads == sorted([(fraud, "visits__1h", 4), (fraud, "visits__1d", 4),
                            (churn, "spend__1h", 1)])
    capsys.readouterr()
    assert main(["registry", str(path), "--redis", redis_url, "--model", churn, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["field"], r["reads"], r["declared"]) for r in doc["models"]] == [
        ("spend__1h", 1, False)]
