"""A converted checkpoint fine-tunes through the sweep runner at any frozen depth: a random-weight PyTorch
ResNet-18 saved as torchvision's safetensors, loaded on the fly (`init=torch:PATH`) and from the directory
`python -m tl_research.convert` writes (`init=DIR`), trained on grey digits at 32x32 with 3 classes."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import tiny  # noqa: E402
from real_torchvision import build, models as tv, resnet_units  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from tl_research.sweeps import sweep  # noqa: E402
from tl_research.checkpoints.convert import convert  # noqa: E402
from tl_research.checkpoints.weights import load_weights  # noqa: E402
from tl_research.config import axis, zip_axes  # noqa: E402
from tl_research.data import pipeline  # noqa: E402
from tl_research.finetune.freezing import unit_of  # noqa: E402
from tl_research.core.tracking import read_metrics  # noqa: E402

CLASSES = 3
FIRST_CONV = "units.0.conv.kernel"


def _probe_test_loss(ref, head, data, mean: float, std: float) -> float:
    """Mean cross-entropy on the test split of the PyTorch source network's features (every unit frozen)
    under `head`, with grey pixels scaled to 0..1, normalised by (mean, std) and repeated over R, G, B."""
    losses = []
    for b in pipeline.eval_batches(data, data.test, 16, 1):
        x = np.repeat(((b["image"] / 255.0 - mean) / std).astype(np.float32), 3, axis=3)
        last = resnet_units(ref, torch.from_numpy(x.transpose(0, 3, 1, 2)))[1][-1]
        with torch.no_grad():
            feats = torch.flatten(ref.avgpool(last), 1)
        logits = feats.numpy().astype(np.float64) @ head["kernel"] + head["bias"]
        logp = logits - logits.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        losses.append(-logp[np.arange(len(logp)), b["label"]][b["mask"]])
    return float(np.mean(np.concatenate(losses)))


@pytest.mark.long  # a converted ResNet-18 at every frozen depth: about 30 s
def test_converted_resnet18_fine_tunes_at_every_frozen_depth(data_dir, tmp_path, capsys):
    src = tmp_path / "resnet18.safetensors"
    ref = build(tv.resnet18, seed=5)  # torchvision's own model, 1000 ImageNet classes
    save_file(ref.state_dict(), src)
    converted = tmp_path / "converted"
    from tl_research.cli.convert import main
    assert main([str(src), "--arch", "resnet18", "--out", str(converted)]) == 0
    assert "source classifier: 1000 classes" in capsys.readouterr().out
    source, meta = load_weights(converted)
    assert meta.mean == (0.485, 0.456, 0.406) and meta.input_size == (224, 224, 3)

    # Grey digits kept grey (data.channels=1): the RGB first conv is adapted; 32x32 instead of 224.
    base = tiny(data_dir, **{"model.name": "resnet18", "data.image_size": 32, "data.channels": 1,
                             "data.classes": (0, 1, 2), "data.val_split": "val[:25%]",
                             "data.test_split": "test[:25%]", "data.batch_size": 4, "data.eval_batch_size": 16,
                             "schedule.lr": 0.01, "train.steps": 3, "train.eval_every": 3,
                             "train.restore_best": False})
    on_the_fly = f"torch:{src}"
    # The runs alternate between converting on the fly and loading the converted directory.
    points = zip_axes(axis("frozen_depth", [0, 8, "all"]), axis("init", [on_the_fly, str(converted), on_the_fly]))
    rows = sweep.run_sweep(base, points, tmp_path / "sweep", progress=False, echo=lambda *_: None)
    assert [r["status"] for r in rows] == ["done"] * 3, [r["reason"] for r in rows]
    runs = {r["frozen_depth"]: tmp_path / "sweep" / r["run_id"] for r in rows}
    trainable = {r["frozen_depth"]: int(r["trainable_params"]) for r in rows}
    assert trainable["0"] > trainable["8"] > trainable["all"] == 512 * CLASSES + CLASSES  # the head alone

    # Both inits start from the same arrays: the on-the-fly conversion is the directory's, bitwise.
    fly, fly_meta = convert("torch", src, "resnet18")
    assert fly_meta == meta
    for coll in fly:
        assert fly[coll].keys() == source[coll].keys()
        for k in fly[coll]:
            np.testing.assert_array_equal(fly[coll][k], source[coll][k], err_msg=k)

    grey_stem = source["params"][FIRST_CONV].sum(axis=2, keepdims=True)  # grey = R + G + B filters
    start = {"params": {**source["params"], FIRST_CONV: grey_stem}, "batch_stats": source["batch_stats"]}
    for depth, run_dir in runs.items():
        frozen = {"0": 0, "8": 8, "all": 9}[depth]
        out, out_meta = load_weights(run_dir / "weights")
        for coll in ("params", "batch_stats"):
            assert out[coll].keys() == start[coll].keys()
            for k, v in out[coll].items():
                if k.startswith("head."):
                    continue
                if unit_of(k) < frozen:  # frozen: bitwise the converted (and adapted) weights
                    np.testing.assert_array_equal(v, start[coll][k], err_msg=f"frozen_depth={depth} {k}")
                else:  # trainable: every weight and running statistic moved
                    assert not np.array_equal(v, start[coll][k]), f"frozen_depth={depth} {k} did not train"
        # a new 3-class head, trained from zero; the source's 1000-class one is not loaded, and both are reported
        assert out["params"]["head.classifier.kernel"].shape == (512, CLASSES)
        assert np.any(out["params"]["head.classifier.kernel"])
        assert out["params"][FIRST_CONV].shape == (7, 7, 1, 64)
        report = next(r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "start")["transfer"]
        assert ("head re-initialised (head.classifier.bias, head.classifier.kernel) for 3 classes, the "
                "checkpoint's 1000-class head not loaded") in report
        assert f"adapted: {FIRST_CONV} 3->1 input channels" in report
        # the exported metadata describes these weights: grey 32x32 input, the normalisation applied, 3 classes
        assert out_meta.input_size == (32, 32, 1) and out_meta.num_classes == CLASSES
        assert out_meta.mean == pytest.approx((np.mean(meta.mean),)) and out_meta.value_range == (0.0, 1.0)
        assert out_meta.std == pytest.approx((np.mean(meta.std),))

    # The checkpoint's preprocessing was applied: the linear probe's reported test loss is that of PyTorch's
    # source network under the probe's head, fed pixels scaled to 0..1 and normalised by the ImageNet
    # mean/std (averaged over R, G, B for grey input), and not that under the default normalisation.
    run_dir = runs["all"]
    reported = json.loads((run_dir / "result.json").read_text())["metrics"]["test_loss"]
    params = load_weights(run_dir / "weights")[0]["params"]
    head = {k: params[f"head.classifier.{k}"].astype(np.float64) for k in ("kernel", "bias")}
    data = pipeline.load(base.data, meta)
    imagenet = _probe_test_loss(ref, head, data, np.mean(meta.mean), np.mean(meta.std))
    assert imagenet == pytest.approx(reported, rel=1e-4)
    assert abs(_probe_test_loss(ref, head, data, 0.5, 0.5) - reported) > 1e-2 * reported
