"""The Grafana dashboards in Portuguese are the English ones, translated, and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "dashboards" / "grafana"


def load(folder: str) -> dict[str, dict[str, object]]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8")) for p in (GRAFANA / folder).glob("*.json")
    }


def queries(node: object) -> list[object]:
    if isinstance(node, dict):
        return [node[k] for k in sorted(node) if k in ("query", "rawSql", "expr")] + [
            q for k in sorted(node) for q in queries(node[k])
        ]
    if isinstance(node, list):
        return [q for item in node for q in queries(item)]
    return []


def test_the_portuguese_set_is_up_to_date_and_complete() -> None:
    # Exit 1 if a visible English string has no translation or json/ is stale.
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "grafana-i18n"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_both_languages_show_the_same_data_under_their_own_uids() -> None:
    english, portuguese = load("json-en"), load("json")
    assert english.keys() == portuguese.keys()
    assert len(english) == 4
    for name, en in english.items():
        pt = portuguese[name]
        assert queries(pt) == queries(en), name
        assert queries(pt), name
        assert en["uid"] == f"{pt['uid']}-en"
        assert "pt-BR" in pt["tags"]  # type: ignore[operator]
        assert "en" in en["tags"]  # type: ignore[operator]
        assert pt["title"] != en["title"]
        assert str(pt["title"]).startswith("Café")
