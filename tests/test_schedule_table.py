"""The per-schedule report: LR chosen on validation, and steps to reach the constant LR's best."""
import json

from tl_research.analysis import results


def _run(tmp_path, rid, name, lr, val, curve, seed=0):
    d = tmp_path / rid
    d.mkdir()
    with (d / "metrics.jsonl").open("w") as f:
        for step, acc in curve:
            f.write(json.dumps({"step": step, "val_accuracy": val, "test_accuracy": acc}) + "\n")
    return {"run_id": rid, "status": "done", "schedule.name": name, "schedule.lr": lr, "seed": seed,
            "frozen_depth": 0, "val_accuracy": val, "test_accuracy": curve[-1][1], "steps": curve[-1][0],
            "best_seen_test_accuracy": max(a for _, a in curve), "final_test_accuracy": curve[-1][1]}


def test_schedule_table_picks_the_lr_on_validation_and_counts_steps_to_the_constant_best(tmp_path):
    rows = [
        _run(tmp_path, "c1", "constant", 0.1, 0.90, [(10, 0.5), (20, 0.7), (30, 0.8)]),
        _run(tmp_path, "c2", "constant", 0.3, 0.80, [(10, 0.6), (20, 0.9), (30, 0.9)]),  # worse on val
        _run(tmp_path, "o1", "one_cycle", 0.1, 0.95, [(10, 0.6), (20, 0.85), (30, 0.9)]),
        _run(tmp_path, "o2", "one_cycle", 0.3, 0.95, [(10, 0.7), (20, 0.75), (30, 0.79)], seed=1),
    ]
    table = results.schedule_table(tmp_path, [{k: str(v) for k, v in r.items()} for r in rows])
    by_name = {r["schedule.name"]: r for r in table.to_dict("records")}
    assert by_name["constant"]["lr"] == 0.1  # 0.3 had the better test curve but the worse val accuracy
    assert by_name["constant"]["best_seen_test"].startswith("0.800")
    assert by_name["constant"]["steps_to_constant_best"] == "30"
    # one_cycle: both LRs tie on validation; the first (0.1) is chosen and reaches 0.8 at step 20
    assert by_name["one_cycle"]["steps_to_constant_best"] == "20"
    rows[2]["best_seen_test_accuracy"] = 0.79
    rows[2]["final_test_accuracy"] = 0.79
    for r in rows[2:]:
        (tmp_path / r["run_id"] / "metrics.jsonl").write_text(json.dumps({"step": 10, "test_accuracy": 0.5}) + "\n")
    table = results.schedule_table(tmp_path, rows)
    assert table.set_index("schedule.name").loc["one_cycle", "steps_to_constant_best"] == "not reached"
