"""What the report's tables say in words: p-values only beside a 'beats random: yes', and the blocks each
random order removed in a table of their own."""
from __future__ import annotations

from gardener.report.agreement import agreement_rows
from gardener.report.oracles import between_rows
from gardener.report.sweep import removed_parts


def _criterion(rho: float, beats: bool | None, family: str) -> dict:
    return {"spearman": rho, "spearman_interval": [rho - 0.2, rho + 0.1], "spearman_p": 0.0123, "kendall": rho - 0.1,
            "kendall_p": 0.0456, "beats_random": beats, "top_k_overlap": {"3": 0.5}, "family": family}


def _agreement(**beats) -> dict:
    criteria = {name: _criterion(0.9 - 0.3 * k, verdict, "information")
                for k, (name, verdict) in enumerate(beats.items())}
    criteria["random"] = _criterion(0.0, None, "baseline")
    return {"criteria": criteria, "oracle_spread": True}


def _records(headers: list[str], rows: list[list[str]]) -> dict[str, dict[str, str]]:
    return {row[1]: dict(zip(headers, row)) for row in rows}


def test_p_values_stand_only_beside_a_criterion_that_beats_random():
    rows = _records(*agreement_rows(_agreement(entropy=True, l2=False)))
    assert rows["entropy"]["beats random"] == "yes" and rows["entropy"]["p (rho)"] == "0.0123"
    assert rows["entropy"]["p (tau)"] == "0.0456"
    assert rows["l2"]["beats random"] == "no" and rows["l2"]["p (rho)"] == rows["l2"]["p (tau)"] == "-"
    assert rows["random"]["beats random"] == "reference" and rows["random"]["p (rho)"] == "-"


def test_without_a_criterion_that_beats_random_there_is_no_p_value_column():
    headers, _ = agreement_rows(_agreement(entropy=False, l2=None))
    assert "beats random" in headers and not [h for h in headers if h.startswith("p")]


def _between(beats: bool | None, separable: bool = True) -> dict:
    return {"spearman": 0.8, "spearman_interval": [0.5, 1.0], "kendall": 0.6, "spearman_p": 0.01, "kendall_p": 0.02,
            "beats_random": beats, "separable": separable, "top_k_overlap": {"3": 1.0}}


def test_the_oracles_agreement_gives_p_values_only_with_a_yes():
    headers, [row] = between_rows(_between(True))
    assert dict(zip(headers, row))["p (rho)"] == "0.01" and dict(zip(headers, row))["beats random"] == "yes"
    headers, [row] = between_rows(_between(False))
    assert "p (rho)" not in headers and dict(zip(headers, row))["beats random"] == "no"
    headers, _ = between_rows(_between(None, separable=False))
    assert "p (rho)" not in headers and "beats random" not in headers


def test_blocks_removed_gives_each_random_order_a_row_of_its_own():
    orders = {25.0: [[1], [4], [6]], 50.0: [[1, 2], [3, 4], [2, 6]]}
    sweep = {"criteria": ["entropy", "random"], "ratios": [25.0, 50.0],
             "rows": [{"criterion": "entropy", "ratio": 25.0, "removed": [6]},
                      {"criterion": "entropy", "ratio": 50.0, "removed": [5, 6]}]
             + [{"criterion": "random", "ratio": q, "removed": removed} for q, removed in orders.items()]}
    parts = removed_parts(sweep)
    tables = [p for p in parts if p[0] == "table"]
    main = {row[0]: row[1:] for row in tables[0][2]}
    assert main == {"entropy": ["6", "5,6"], "random": ["3 orders (table below)", "3 orders (table below)"]}
    assert tables[1][1] == ["random order", "25 %", "50 %"]
    assert tables[1][2] == [["1", "1", "1,2"], ["2", "4", "3,4"], ["3", "6", "2,6"]]

